//! CloudWatch metrics as Embedded Metric Format lines on stdout: CloudWatch
//! Logs turns each line into metric values, with no API call on the request
//! path.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// One EMF line: a namespace, its dimensions, metrics and extra properties.
#[derive(Debug, Clone)]
pub struct Emf {
    namespace: &'static str,
    dimensions: Vec<&'static str>,
    metrics: Vec<Value>,
    fields: Map<String, Value>,
}

impl Emf {
    /// A line in `namespace`.
    pub fn new(namespace: &'static str) -> Self {
        Self {
            namespace,
            dimensions: Vec::new(),
            metrics: Vec::new(),
            fields: Map::new(),
        }
    }

    /// A dimension and its value.
    pub fn dimension(mut self, name: &'static str, value: &str) -> Self {
        self.dimensions.push(name);
        self.fields.insert(name.into(), Value::String(value.into()));
        self
    }

    /// A metric, its unit (`Count`, `Milliseconds`, …) and value.
    pub fn metric(
        mut self,
        name: &'static str,
        unit: &'static str,
        value: impl Into<Value>,
    ) -> Self {
        self.metrics.push(json!({"Name": name, "Unit": unit}));
        self.fields.insert(name.into(), value.into());
        self
    }

    /// A property that is logged but is not a metric.
    pub fn property(mut self, name: &'static str, value: Value) -> Self {
        self.fields.insert(name.into(), value);
        self
    }

    /// The line's JSON.
    pub fn to_json(&self) -> Value {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut line = self.fields.clone();
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": millis,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [self.dimensions],
                    "Metrics": self.metrics,
                }]
            }),
        );
        Value::Object(line)
    }

    /// Prints the line (EMF must be a line of its own on stdout).
    pub fn print(&self) {
        println!("{}", self.to_json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_its_metrics_and_dimensions() {
        let line = Emf::new("TaskPilot")
            .dimension("Kind", "positive")
            .metric("Feedback", "Count", 2)
            .property("status", json!("ok"))
            .to_json();
        let aws = &line["_aws"];
        assert!(aws["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(
            aws["CloudWatchMetrics"],
            json!([{"Namespace": "TaskPilot", "Dimensions": [["Kind"]],
                    "Metrics": [{"Name": "Feedback", "Unit": "Count"}]}])
        );
        assert_eq!(
            (&line["Kind"], &line["Feedback"], &line["status"]),
            (&json!("positive"), &json!(2), &json!("ok"))
        );
    }
}
