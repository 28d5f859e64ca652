//! TensorBoard event files through `tensorboard-rs`.
//!
//! `tensorboard-rs` writes on a background thread: `flush` only queues a message, and
//! everything queued is on disk once the writer is dropped (its Drop joins the thread). Its `add_text`
//! and `add_histogram` panic (unimplemented), so text and histogram summaries are built here
//! and sent with `add_summary` / `add_histogram_raw`. One writer per run folder.

use super::MetricsSink;
use protobuf::RepeatedField;
use std::path::Path;
use tensorboard_proto::summary::{
    Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::TensorShapeProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::summary::{histogram_raw, scalar};
use tensorboard_rs::summary_writer::FileWriter;

/// Scalars, histograms and text into one event file in the run folder.
pub struct TensorBoardSink {
    writer: FileWriter,
}

impl TensorBoardSink {
    /// Opens the writer in `dir` (which must exist and be writable: the writer thread panics
    /// on I/O errors, so the caller checks first).
    pub fn new(dir: &Path) -> Self {
        Self {
            writer: FileWriter::new(dir),
        }
    }
}

impl MetricsSink for TensorBoardSink {
    fn scalar(&mut self, tag: &str, value: f64, step: usize) {
        self.writer.add_summary(scalar(tag, value as f32), step);
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
        self.writer.add_summary(summary, step);
    }

    fn text(&mut self, tag: &str, text: &str, step: usize) {
        self.writer.add_summary(text_summary(tag, text), step);
    }

    fn flush(&mut self) {
        self.writer.flush();
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
