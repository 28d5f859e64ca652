//! `autoprune report`: one PNG per call with the reward curves of one or more runs and the
//! per-layer keep profile of each run's best policy beside reference profiles (uniform and
//! LAMP at the same budget); line charts for the scaling and adaptation curves.
//!
//! Must not know about search internals: it draws the numbers it is given.

use crate::error::{Error, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;

/// One run's curve and its best policy's profile.
#[derive(Debug, Clone)]
pub struct RunCurve {
    pub label: String,
    pub rewards: Vec<f64>,
    pub best_rewards: Vec<f64>,
    pub best_keeps: Vec<f64>,
}

/// A named keep profile (one ratio per unit).
#[derive(Debug, Clone)]
pub struct Profile {
    pub label: String,
    pub keeps: Vec<f64>,
}

/// Where a TrueType font is looked for (`AUTOPRUNE_FONT` first).
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> Result<()> {
    let candidates = std::env::var("AUTOPRUNE_FONT")
        .into_iter()
        .chain(FONT_PATHS.iter().map(|p| p.to_string()));
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    Err(Error::data(
        FONT_PATHS[0],
        "no TrueType font found for the chart's text; install fonts-dejavu-core or point AUTOPRUNE_FONT at a .ttf file",
    ))
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::data(path, format!("cannot draw the report: {e}"))
}

/// Draws the report to `path` (PNG). `units` names the layers on the profile's x axis.
pub fn render(
    path: &Path,
    title: &str,
    runs: &[RunCurve],
    references: &[Profile],
    units: &[String],
) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| plot_error(path, e))?;
    let (left, right) = root.split_horizontally(680);
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

    let episodes = runs
        .iter()
        .map(|r| r.rewards.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let all: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.rewards.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let pad = (hi - lo) * 0.05;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "reward per episode (thin) and best so far (thick)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..(episodes - 1) as f64, (lo - pad)..(hi + pad))
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("episode")
        .y_desc("reward")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    for (i, run) in runs.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(
                run.rewards.iter().enumerate().map(|(x, &y)| (x as f64, y)),
                color.mix(0.3),
            ))
            .map_err(|e| plot_error(path, e))?;
        chart
            .draw_series(LineSeries::new(
                run.best_rewards
                    .iter()
                    .enumerate()
                    .map(|(x, &y)| (x as f64, y)),
                color.stroke_width(3),
            ))
            .map_err(|e| plot_error(path, e))?
            .label(run.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_error(path, e))?;

    let n = units.len().max(2);
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "keep ratio per layer of the best policy",
            ("sans-serif", 16),
        )
        .margin(12)
        .margin_right(48)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..(n - 1) as f64, 0f64..1.05)
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("layer (graph order)")
        .y_desc("keep ratio")
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|x| units.get(x.round() as usize).cloned().unwrap_or_default())
        .x_labels(n.min(12))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    let profiles: Vec<(String, Vec<f64>, RGBColor, bool)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                r.label.clone(),
                r.best_keeps.clone(),
                palette[i % palette.len()],
                true,
            )
        })
        .chain(references.iter().enumerate().map(|(i, p)| {
            (
                p.label.clone(),
                p.keeps.clone(),
                [RGBColor(120, 120, 120), RGBColor(230, 140, 0)][i % 2],
                false,
            )
        }))
        .collect();
    for (label, keeps, color, solid) in profiles {
        let points: Vec<(f64, f64)> = keeps
            .iter()
            .enumerate()
            .map(|(x, &y)| (x as f64, y))
            .collect();
        let style = if solid {
            color.stroke_width(3)
        } else {
            color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| plot_error(path, e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| plot_error(path, e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    root.present().map_err(|e| plot_error(path, e))?;
    Ok(())
}

/// A log-log scatter with a line: `points` are (x, y), e.g. graph edges against seconds.
pub fn render_scaling(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[(f64, f64)],
) -> Result<()> {
    register_font()?;
    let positive: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .collect();
    if positive.is_empty() {
        return Err(plot_error(path, "no positive points to draw"));
    }
    let (x_lo, x_hi) = positive
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y_lo, y_hi) = positive
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_lo / 1.5..x_hi * 1.5).log_scale(),
            (y_lo / 1.5..y_hi * 1.5).log_scale(),
        )
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    // A line through the largest point, proportional to x: what linear growth looks like.
    let (x_last, y_last) = positive[positive.len() - 1];
    chart
        .draw_series(LineSeries::new(
            [x_lo, x_hi].map(|x| (x, y_last * x / x_last)),
            BLACK.mix(0.4),
        ))
        .map_err(|e| plot_error(path, e))?
        .label("proportional to x")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.4)));
    chart
        .draw_series(LineSeries::new(
            positive.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| plot_error(path, e))?
        .label("measured")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    chart
        .draw_series(positive.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
        .map_err(|e| plot_error(path, e))?;
    root.present().map_err(|e| plot_error(path, e))?;
    Ok(())
}

/// Lines on linear axes: one named series of (x, y) points each, e.g. reward against
/// adaptation episodes for several initialisations.
pub fn render_lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    register_font()?;
    let points = || series.iter().flat_map(|(_, p)| p.iter().copied());
    if points().next().is_none() || points().any(|(x, y)| !(x.is_finite() && y.is_finite())) {
        return Err(plot_error(
            path,
            "no points, or a point that is not a number",
        ));
    }
    let (x_lo, x_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    let (y_lo, y_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.1), b.max(p.1))
    });
    let pad = ((y_hi - y_lo) * 0.1).max(1e-3);
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_lo..x_hi.max(x_lo + 1.0), y_lo - pad..y_hi + pad)
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|y| format!("{y:.3}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    for (i, (label, line)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
            .map_err(|e| plot_error(path, e))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| plot_error(path, e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    root.present().map_err(|e| plot_error(path, e))?;
    Ok(())
}

/// Scatter plots side by side, one panel per named point set (x: the panel's own measure,
/// y: `y_desc`, shared by every panel), e.g. each proxy's score against the fine-tuned
/// accuracy of the same policies.
pub fn render_scatter(
    path: &Path,
    title: &str,
    y_desc: &str,
    panels: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    register_font()?;
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    if panels.is_empty()
        || panels
            .iter()
            .any(|(_, p)| p.is_empty() || !p.iter().all(finite))
    {
        return Err(plot_error(
            path,
            "a panel without points, or a point that is not a number",
        ));
    }
    let range = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let pad = ((hi - lo) * 0.08).max(1e-3);
        (lo - pad)..(hi + pad)
    };
    let cols = panels.len().min(3);
    let rows = panels.len().div_ceil(cols);
    let root =
        BitMapBackend::new(path, (380 * cols as u32, 340 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| plot_error(path, e))?;
    let y_range = range(&mut panels.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
    for (area, (name, points)) in root.split_evenly((rows, cols)).iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(name, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(range(&mut points.iter().map(|p| p.0)), y_range.clone())
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .y_desc(y_desc)
            .x_labels(5)
            .x_label_formatter(&|x| format!("{x:.3}"))
            .y_label_formatter(&|y| format!("{y:.3}"))
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(|e| plot_error(path, e))?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(|e| plot_error(path, e))?;
    }
    root.present().map_err(|e| plot_error(path, e))?;
    Ok(())
}
