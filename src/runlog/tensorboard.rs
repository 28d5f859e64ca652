//! TensorBoard event files, built with `tensorboard-rs`'s summary builders and record writer.
//!
//! `tensorboard-rs`'s own `FileWriter` writes on a background thread that panics on any I/O
//! error (a full disk, a removed folder) and takes the process down with it. This sink writes
//! the same records synchronously instead, so a failed write is an error the search reports
//! (and everything logged before it stays readable). Its `add_text` and `add_histogram` panic
//! (unimplemented), so text and histogram summaries are built here. One file per process and
//! run folder.

use super::MetricsSink;
use crate::error::{Error, Result};
use protobuf::{Message, RepeatedField};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tensorboard_proto::event::Event;
use tensorboard_proto::summary::{
    Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::TensorShapeProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::record_writer::RecordWriter;
use tensorboard_rs::summary::{histogram_raw, scalar};

/// Scalars, histograms and text into one event file in the run folder.
pub struct TensorBoardSink {
    path: PathBuf,
    writer: RecordWriter<BufWriter<File>>,
    /// The first write error; reported by `flush`, after which nothing more is written.
    failed: Option<std::io::Error>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl TensorBoardSink {
    /// Creates `events.out.tfevents.<time>.autoprune.<pid>.0` in `dir` (which must exist) and
    /// writes the file-version event.
    pub fn new(dir: &Path) -> Result<Self> {
        let started = now();
        let path = dir.join(format!(
            "events.out.tfevents.{:010}.autoprune.{}.0",
            started as u64,
            std::process::id()
        ));
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut sink = Self {
            path,
            writer: RecordWriter::new(BufWriter::new(file)),
            failed: None,
        };
        let mut event = Event::new();
        event.set_wall_time(started);
        event.set_file_version("brain.Event:2".to_string());
        sink.write(event);
        sink.flush()?;
        Ok(sink)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: Event) {
        if self.failed.is_some() {
            return;
        }
        let result = event
            .write_to_bytes()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| self.writer.write(&bytes));
        if let Err(e) = result {
            self.failed = Some(e);
        }
    }

    fn add_summary(&mut self, summary: Summary, step: usize) {
        let mut event = Event::new();
        event.set_wall_time(now());
        event.set_step(step as i64);
        event.set_summary(summary);
        self.write(event);
    }
}

impl MetricsSink for TensorBoardSink {
    fn scalar(&mut self, tag: &str, value: f64, step: usize) {
        self.add_summary(scalar(tag, value as f32), step);
    }

    fn histogram(&mut self, tag: &str, values: &[f64], step: usize) {
        if values.is_empty() {
            return;
        }
        let (buckets, counts) = histogram_buckets(values, 20);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = values.iter().sum();
        let sum_squares: f64 = values.iter().map(|v| v * v).sum();
        let summary = histogram_raw(
            tag,
            min,
            max,
            values.len() as f64,
            sum,
            sum_squares,
            &buckets,
            &counts,
        );
        self.add_summary(summary, step);
    }

    fn text(&mut self, tag: &str, text: &str, step: usize) {
        self.add_summary(text_summary(tag, text), step);
    }

    fn flush(&mut self) -> Result<()> {
        if self.failed.is_none() {
            if let Err(e) = self.writer.flush() {
                self.failed = Some(e);
            }
        }
        match &self.failed {
            None => Ok(()),
            Some(e) => Err(Error::io(
                &self.path,
                std::io::Error::new(e.kind(), format!("cannot write TensorBoard events: {e}")),
            )),
        }
    }
}

/// A text summary as TensorBoard's text plugin reads it: a scalar string tensor.
fn text_summary(tag: &str, text: &str) -> Summary {
    let mut tensor = TensorProto::new();
    tensor.set_dtype(DataType::DT_STRING);
    tensor.set_tensor_shape(TensorShapeProto::new());
    tensor.set_string_val(RepeatedField::from_vec(vec![text.as_bytes().to_vec()]));
    let mut plugin = SummaryMetadata_PluginData::new();
    plugin.set_plugin_name("text".to_string());
    let mut metadata = SummaryMetadata::new();
    metadata.set_plugin_data(plugin);
    let mut value = Summary_Value::new();
    value.set_tag(tag.to_string());
    value.set_metadata(metadata);
    value.set_tensor(tensor);
    let mut summary = Summary::new();
    summary.set_value(RepeatedField::from_vec(vec![value]));
    summary
}

/// `n` equal-width buckets over [min, max]: right edges and counts.
pub fn histogram_buckets(values: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let width = if max > min {
        (max - min) / n as f64
    } else {
        1.0
    };
    let edges: Vec<f64> = (1..=n).map(|i| min + width * i as f64).collect();
    let mut counts = vec![0f64; n];
    for &v in values {
        let i = (((v - min) / width).floor() as usize).min(n - 1);
        counts[i] += 1.0;
    }
    (edges, counts)
}
