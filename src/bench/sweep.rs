//! The cold attempt delay sweep (`[sweep]` in a scenario): the scenario's
//! one delay fault is applied at every value from `from_ms` to `to_ms` in
//! `step_ms` steps (the "Lazy Eye Inspection" testbed's method for
//! browsers), and at each value cold dials of `rfc6555` (300 ms),
//! `rfc8305` (250 ms) and siprace with each candidate cold attempt delay
//! record which family won and how long the setup took. The plot and the
//! table show the trade the cold default makes: IPv6 keeps winning while
//! its extra delay is below the attempt delay, and every cold dial over a
//! broken IPv6 pays the attempt delay.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bench::records::{SweepPoint, SweepRow};
use crate::race::strategy::Strategy;

/// What a scenario's `[sweep]` asks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub from_ms: u32,
    pub to_ms: u32,
    pub step_ms: u32,
    /// The siprace cold attempt delays compared, ms.
    pub siprace_delays_ms: Vec<u64>,
}

impl SweepSpec {
    pub fn check(&self) -> Result<(), String> {
        if self.step_ms == 0 || self.to_ms < self.from_ms {
            return Err("sweep: step_ms must be at least 1 and to_ms >= from_ms".into());
        }
        if self.delays().len() > 100 || self.siprace_delays_ms.len() > 8 {
            return Err("sweep: at most 100 values and 8 siprace delays".into());
        }
        if self
            .siprace_delays_ms
            .iter()
            .any(|d| !(10..=2000).contains(d))
        {
            return Err("sweep: siprace_delays_ms must be within 10-2000".into());
        }
        Ok(())
    }

    /// The swept delays, ms.
    pub fn delays(&self) -> Vec<u32> {
        (self.from_ms..=self.to_ms)
            .step_by(self.step_ms.max(1) as usize)
            .collect()
    }

    /// The rows at each value: label, strategy, and the attempt delay
    /// replacing the strategy's own (for the siprace candidates).
    pub fn rows(&self) -> Vec<(String, Strategy, Option<Duration>)> {
        let mut rows = vec![
            ("rfc6555".to_string(), Strategy::Rfc6555, None),
            ("rfc8305".to_string(), Strategy::Rfc8305, None),
        ];
        for &ms in &self.siprace_delays_ms {
            rows.push((
                format!("siprace-cold {ms} ms"),
                Strategy::Siprace,
                Some(Duration::from_millis(ms)),
            ));
        }
        rows
    }
}

/// The markdown table of a sweep: per row, the median setup latency and
/// the IPv6 share at every `every_ms` of the swept delay.
pub fn table(key: &str, points: &[SweepPoint], every_ms: u32) -> String {
    let mut t = String::new();
    let shown: Vec<&SweepPoint> = points
        .iter()
        .filter(|p| p.delay_ms % every_ms.max(1) == 0)
        .collect();
    let Some(first) = shown.first() else {
        return t;
    };
    let _ = writeln!(
        t,
        "Sweep {key}: median setup ms / IPv6 wins, against the extra IPv6 delay\n"
    );
    let _ = write!(t, "| row |");
    for p in &shown {
        let _ = write!(t, " +{} ms |", p.delay_ms);
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "|---|{}", "---:|".repeat(shown.len()));
    for (i, r) in first.rows.iter().enumerate() {
        let _ = write!(t, "| {} |", r.row);
        for p in &shown {
            match p.rows.get(i) {
                Some(r) => {
                    let _ = write!(t, " {:.0} / {:.0}% |", r.p50_ms, r.ipv6_share * 100.0);
                }
                None => {
                    let _ = write!(t, " - |");
                }
            }
        }
        let _ = writeln!(t);
    }
    t
}

/// Writes the sweep plot: median setup latency (top) and IPv6 share
/// (bottom) against the extra IPv6 delay, one line per row.
pub fn plot(path: &Path, key: &str, points: &[SweepPoint]) -> Result<(), String> {
    use plotters::prelude::*;
    let Some(first) = points.first() else {
        return Ok(());
    };
    let x_max = points.iter().map(|p| p.delay_ms).max().unwrap_or(1).max(1) as f64;
    let y_max = points
        .iter()
        .flat_map(|p| p.rows.iter().map(|r| r.p50_ms))
        .fold(1.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(520);
    let mut latency = ChartBuilder::on(&top)
        .caption(
            format!("{key}: median setup latency against the extra IPv6 delay"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    latency
        .configure_mesh()
        .x_desc("extra IPv6 delay (ms, one way)")
        .y_desc("median setup (ms)")
        .draw()
        .map_err(|e| e.to_string())?;
    let mut share = ChartBuilder::on(&bottom)
        .caption("share of dials won over IPv6", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, 0f64..1.05f64)
        .map_err(|e| e.to_string())?;
    share
        .configure_mesh()
        .x_desc("extra IPv6 delay (ms, one way)")
        .y_desc("IPv6 wins")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, r) in first.rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series = |f: fn(&SweepRow) -> f64| -> Vec<(f64, f64)> {
            points
                .iter()
                .filter_map(|p| p.rows.get(i).map(|r| (f64::from(p.delay_ms), f(r))))
                .collect()
        };
        latency
            .draw_series(LineSeries::new(series(|r| r.p50_ms), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(r.row.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        share
            .draw_series(LineSeries::new(
                series(|r| r.ipv6_share),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
    }
    latency
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swept_values_and_rows() {
        let spec = SweepSpec {
            from_ms: 0,
            to_ms: 400,
            step_ms: 10,
            siprace_delays_ms: vec![50, 100],
        };
        spec.check().unwrap();
        let delays = spec.delays();
        assert_eq!((delays.len(), delays[1], delays[40]), (41, 10, 400));
        let labels: Vec<String> = spec.rows().into_iter().map(|r| r.0).collect();
        assert_eq!(
            labels,
            [
                "rfc6555",
                "rfc8305",
                "siprace-cold 50 ms",
                "siprace-cold 100 ms"
            ]
        );
        let bad = SweepSpec {
            step_ms: 0,
            ..spec.clone()
        };
        assert!(bad.check().is_err());
    }
}
