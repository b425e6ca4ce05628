//! One figure per line of JSON, and a table for people at the end.

use serde::{Deserialize, Serialize};

/// One measured figure (read back from a child run by [`crate::browser`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// Which bench.
    pub bench: String,
    /// What was measured.
    pub metric: String,
    /// The value (`null` when it could not be measured).
    pub value: Option<f64>,
    /// Its unit.
    pub unit: String,
    /// What the same run measured for the reference, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<f64>,
    /// What the reference is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_name: Option<String>,
    /// Anything else worth knowing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Figure {
    /// A figure without a reference.
    pub fn new(bench: &str, metric: &str, value: Option<f64>, unit: &str) -> Figure {
        Figure {
            bench: bench.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            reference: None,
            reference_name: None,
            note: String::new(),
        }
    }

    /// Adds the reference measured in the same run.
    pub fn against(mut self, name: &str, value: Option<f64>) -> Figure {
        self.reference_name = Some(name.into());
        self.reference = value;
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = note.into();
        self
    }

    /// Prints the JSON line at once (so a long run shows progress).
    pub fn emit(self, all: &mut Vec<Figure>) {
        let mut v = serde_json::to_value(&self).unwrap_or_default();
        if let (Some(a), Some(b)) = (self.value, self.reference) {
            if b != 0.0 {
                v["ratio"] = serde_json::json!((a / b * 1000.0).round() / 1000.0);
            }
        }
        println!("{v}");
        all.push(self);
    }
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// The table at the end.
pub fn table(all: &[Figure]) {
    println!();
    println!(
        "{:<18} {:<34} {:>12} {:<8} {:>12}  reference is",
        "bench", "metric", "value", "unit", "reference"
    );
    println!("{}", "-".repeat(110));
    for f in all {
        println!(
            "{:<18} {:<34} {:>12} {:<8} {:>12}  {}",
            f.bench,
            f.metric,
            fmt(f.value),
            f.unit,
            fmt(f.reference),
            f.reference_name.clone().unwrap_or_default()
        );
    }
}

/// The q-quantile (0..=1) of `xs` (sorted here).
pub fn quantile(xs: &mut [f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let i = ((xs.len() - 1) as f64 * q).round() as usize;
    Some(xs[i])
}
