//! Just enough of the Prometheus text format to read a server's gauges:
//! `name{labels} value` lines, comments skipped, values summed per metric
//! name across labels (vLLM labels every series with its model).

use std::collections::HashMap;

/// Sums per metric name.
#[derive(Debug, Default)]
pub struct Samples {
    sums: HashMap<String, f64>,
}

impl Samples {
    pub fn parse(text: &str) -> Samples {
        let mut sums = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) if line.as_bytes()[i] == b'{' => {
                    // Label values may hold spaces and braces inside quotes;
                    // the value follows the last '}'.
                    let Some(close) = line.rfind('}') else {
                        continue;
                    };
                    (&line[..i], &line[close + 1..])
                }
                Some(i) => (&line[..i], &line[i..]),
                None => continue,
            };
            let Some(value) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite())
            else {
                continue;
            };
            *sums.entry(name.to_string()).or_insert(0.0) += value;
        }
        Samples { sums }
    }

    /// The first of `names` present: servers rename metrics across versions.
    pub fn first(&self, names: &[&str]) -> Option<f64> {
        names.iter().find_map(|n| self.sums.get(*n).copied())
    }

    /// As a count (negative and fractional values clamp).
    pub fn count(&self, names: &[&str]) -> Option<u32> {
        self.first(names)
            .map(|v| v.clamp(0.0, f64::from(u32::MAX)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_labels_and_skips_what_it_cannot_read() {
        let text = r#"
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a b{c}"} 3.0
vllm:num_requests_running{engine="1",model_name="x"} 2
vllm:num_requests_waiting{model_name="x"} 4 1700000000000
vllm:gpu_cache_usage_perc{model_name="x"} 0.25
llamacpp:requests_deferred 1
broken{ 7
nan_metric NaN
"#;
        let s = Samples::parse(text);
        assert_eq!(s.count(&["vllm:num_requests_running"]), Some(5));
        assert_eq!(s.count(&["vllm:num_requests_waiting"]), Some(4));
        assert_eq!(
            s.first(&["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"]),
            Some(0.25)
        );
        assert_eq!(s.count(&["llamacpp:requests_deferred"]), Some(1));
        assert_eq!(s.first(&["nan_metric"]), None);
        assert_eq!(s.first(&["missing"]), None);
    }
}
