//! Latency histograms: creation, transport between processes (HdrHistogram V2
//! serialization, base64), `.hgrm` percentile-distribution files, and an SVG
//! latency-by-percentile plot with a logarithmic percentile axis.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// Highest latency recorded, in microseconds (60 s); larger samples saturate.
pub const MAX_US: u64 = 60_000_000;

/// Why a histogram could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    /// The bounds were refused.
    #[error("cannot create a histogram: {0}")]
    Create(String),
    /// Serialization failed.
    #[error("cannot serialize a histogram: {0}")]
    Serialize(String),
    /// The text is not a serialized histogram.
    #[error("cannot read a histogram: {0}")]
    Deserialize(String),
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn new_us() -> Result<Histogram<u64>, HistError> {
    Histogram::new_with_bounds(1, MAX_US, 3).map_err(|e| HistError::Create(e.to_string()))
}

/// The histogram as base64 of its V2 serialization.
pub fn to_base64(h: &Histogram<u64>) -> Result<String, HistError> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| HistError::Serialize(format!("{e:?}")))?;
    Ok(BASE64.encode(bytes))
}

/// Reads a histogram written by [`to_base64`].
pub fn from_base64(text: &str) -> Result<Histogram<u64>, HistError> {
    let bytes = BASE64
        .decode(text)
        .map_err(|e| HistError::Deserialize(e.to_string()))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| HistError::Deserialize(format!("{e:?}")))
}

/// Adds `from` into `into` (samples beyond `into`'s range saturate).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// The HdrHistogram percentile distribution text (`.hgrm`) of a histogram of
/// microseconds, values printed in milliseconds, 5 ticks per half distance as
/// HdrHistogram's own tools print it (readable by its plotter).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if h.is_empty() {
        let _ = writeln!(out, "#[Mean    = 0.000, StdDeviation   = 0.000]");
        let _ = writeln!(out, "#[Max     = 0.000, Total count    = 0]");
        return out;
    }
    let ms = |v: u64| v as f64 / 1000.0;
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            format!("{:>14}", "inf")
        };
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {inverse}",
            ms(v.value_iterated_to()),
            q,
            total
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        ms(h.max()),
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

/// One line of a plot: a label and a histogram of microseconds.
#[derive(Debug)]
pub struct Series<'a> {
    /// Legend text.
    pub label: String,
    /// The samples.
    pub hist: &'a Histogram<u64>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis (1, 2 or 5 × 10^k at or above `v`).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let exp = v.log10().floor();
    let base = 10f64.powf(exp);
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * base >= v {
            return m * base;
        }
    }
    10.0 * base
}

/// An SVG plot of latency (ms, logarithmic y) by percentile (log x: 0, 90, 99, 99.9,
/// 99.99, 99.999 %), one line per series, in the style of HdrHistogram plots.
pub fn svg_plot(title: &str, series: &[Series<'_>]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 520.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 220.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    const DECADES: f64 = 5.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let nonempty = || series.iter().filter(|s| !s.hist.is_empty());
    let max_ms = nonempty()
        .map(|s| s.hist.max() as f64 / 1000.0)
        .fold(0.0, f64::max);
    let min_ms = nonempty()
        .map(|s| s.hist.min().max(1) as f64 / 1000.0)
        .fold(f64::MAX, f64::min);
    // Logarithmic latency axis, whole decades: peers and tickcast differ by 1000×.
    let lo_exp = if min_ms < f64::MAX {
        min_ms.log10().floor().max(-3.0)
    } else {
        -1.0
    };
    let hi_exp = nice_ceiling(max_ms).log10().ceil().max(lo_exp + 1.0);
    // x = log10(1 / (1 - q)), clamped to DECADES.
    let x_of = |q: f64| {
        let d = if q >= 1.0 {
            DECADES
        } else {
            (1.0 / (1.0 - q)).log10().min(DECADES)
        };
        LEFT + d / DECADES * plot_w
    };
    let y_of = |ms: f64| {
        let e = ms.max(1e-3).log10().clamp(lo_exp, hi_exp);
        TOP + plot_h - (e - lo_exp) / (hi_exp - lo_exp) * plot_h
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        xml_escape(title)
    );
    // Grid and x labels.
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = LEFT + i as f64 / DECADES * plot_w;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let mut e = lo_exp;
    while e <= hi_exp + 1e-9 {
        let v = 10f64.powf(e);
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            trim_float(v)
        );
        e += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (ms, log)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (n, series) in series.iter().enumerate() {
        let color = COLORS.get(n % COLORS.len()).copied().unwrap_or("#000");
        if !series.hist.is_empty() {
            let mut points = Vec::new();
            for v in series.hist.iter_quantiles(5) {
                let q = v.quantile_iterated_to();
                let ms = v.value_iterated_to() as f64 / 1000.0;
                points.push(format!("{:.1},{:.1}", x_of(q), y_of(ms)));
                if q >= 0.999_99 {
                    break;
                }
            }
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
        let ly = TOP + 10.0 + n as f64 * 20.0;
        let lx = LEFT + plot_w + 15.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            xml_escape(&series.label)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    s.push_str("</svg>\n");
    s
}

fn trim_float(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Result<Histogram<u64>, HistError> {
        let mut h = new_us()?;
        for v in 1..=10_000u64 {
            h.saturating_record(v * 10);
        }
        Ok(h)
    }

    #[test]
    fn base64_round_trip_keeps_every_count() -> Result<(), HistError> {
        let h = sample()?;
        let back = from_base64(&to_base64(&h)?)?;
        assert_eq!(back.len(), h.len());
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
        assert_eq!(back.max(), h.max());
        assert!(from_base64("not base64!").is_err());
        assert!(from_base64("AAAA").is_err());
        Ok(())
    }

    #[test]
    fn merge_adds_counts() -> Result<(), HistError> {
        let mut a = sample()?;
        let b = sample()?;
        merge(&mut a, &b);
        assert_eq!(a.len(), 20_000);
        Ok(())
    }

    #[test]
    fn hgrm_lists_percentiles_in_ms() -> Result<(), HistError> {
        let text = hgrm(&sample()?);
        assert!(text.starts_with("       Value     Percentile"));
        assert!(text.contains("#[Max     =      100.031, Total count    =        10000]"));
        // The last value line is at 100 %.
        let last = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap_or_default();
        assert!(last.contains("1.000000000000"), "{last}");
        Ok(())
    }

    #[test]
    fn plot_has_one_line_per_series() -> Result<(), HistError> {
        let (a, b) = (sample()?, new_us()?);
        let svg = svg_plot(
            "t <1>",
            &[
                Series {
                    label: String::from("a"),
                    hist: &a,
                },
                Series {
                    label: String::from("empty"),
                    hist: &b,
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("99.999%"));
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        Ok(())
    }
}
