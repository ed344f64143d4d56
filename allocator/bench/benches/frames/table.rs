//! The plain-text result table.

/// Column order of the allocators.
pub const NAMES: [&str; 4] = ["ours", "bsa 0.6.1", "bsys 0.13", "bitmap"];
/// Short names used in the ratio (ours/peer) column headers.
const SHORT: [&str; 3] = ["bsa", "bsys", "bmp"];

#[derive(Clone, Copy, PartialEq)]
pub enum Unit {
    Ns,
    Us,
    Pct,
}

impl Unit {
    fn higher_is_better(self) -> bool {
        self == Unit::Pct
    }
    fn name(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::Us => "us",
            Unit::Pct => "%",
        }
    }
}

/// One measured cell.
#[derive(Clone, Debug)]
pub enum Cell {
    /// A measured value in the row's unit.
    V(f64),
    /// The result was wrong (e.g. misaligned); the time is kept for the notes.
    Wrong,
    /// Every request failed.
    Oom,
    /// The allocator has no such operation.
    Na,
    /// Ours could not be measured (API missing).
    Missing,
}

pub struct Row {
    pub id: &'static str,
    pub label: String,
    pub unit: Unit,
    /// Absolute target: display text and threshold (max for time, min for %).
    pub target: Option<(String, f64)>,
    pub cells: [Cell; 4],
}

impl Row {
    pub fn new(id: &'static str, label: impl Into<String>, unit: Unit, cells: [Cell; 4]) -> Self {
        Self {
            id,
            label: label.into(),
            unit,
            target: None,
            cells,
        }
    }

    pub fn target(mut self, text: impl Into<String>, v: f64) -> Self {
        self.target = Some((text.into(), v));
        self
    }

    fn better(&self, a: f64, b: f64) -> bool {
        if self.unit.higher_is_better() {
            a >= b
        } else {
            a <= b
        }
    }

    fn vs_target(&self) -> String {
        match (&self.target, &self.cells[0]) {
            (Some((_, t)), Cell::V(v)) => pass(self.better(*v, *t)),
            (Some(_), Cell::Missing) => "?".into(),
            (Some(_), _) => "MISS".into(),
            (None, _) => "-".into(),
        }
    }

    fn vs_peers(&self) -> String {
        let Cell::V(ours) = self.cells[0] else {
            return if matches!(self.cells[0], Cell::Missing) {
                "?".into()
            } else {
                "MISS".into()
            };
        };
        let mut compared = false;
        let mut ahead = true;
        for c in &self.cells[1..] {
            match c {
                Cell::V(p) => {
                    compared = true;
                    ahead &= self.better(ours, *p);
                }
                Cell::Wrong | Cell::Oom => compared = true,
                Cell::Na | Cell::Missing => {}
            }
        }
        if compared { pass(ahead) } else { "-".into() }
    }
}

fn pass(ok: bool) -> String {
    if ok { "PASS" } else { "MISS" }.into()
}

fn fmt_v(v: f64) -> String {
    if !v.is_finite() {
        "nan".into()
    } else if v >= 100_000.0 {
        // Thousands separators for the big ones.
        let s = format!("{v:.0}");
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_cell(c: &Cell) -> String {
    match c {
        Cell::V(v) => fmt_v(*v),
        Cell::Wrong => "wrong".into(),
        Cell::Oom => "OOM".into(),
        Cell::Na => "n/a".into(),
        Cell::Missing => "no API".into(),
    }
}

fn fmt_ratio(ours: &Cell, peer: &Cell) -> String {
    match (ours, peer) {
        (Cell::V(o), Cell::V(p)) if *p > 0.0 => format!("{:.2}x", o / p),
        _ => "-".into(),
    }
}

/// Render the table as plain text.
pub fn render(rows: &[Row]) -> String {
    let lw = rows
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(10)
        .max(8);
    let tw = rows
        .iter()
        .map(|r| r.target.as_ref().map_or(1, |t| t.0.len()))
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = String::new();
    let mut header = format!(
        "{:<4}{:<lw$} {:<4} {:>tw$} {:>9}",
        "row", "workload", "unit", "target", NAMES[0]
    );
    for (n, s) in NAMES[1..].iter().zip(SHORT) {
        header += &format!("  {n:>9} {:>7}", format!("/{s}"));
    }
    header += "  target  peers";
    out += &header;
    out.push('\n');
    out += &"-".repeat(header.len());
    out.push('\n');
    for r in rows {
        let target = r.target.as_ref().map_or("-".to_string(), |t| t.0.clone());
        let mut line = format!(
            "{:<4}{:<lw$} {:<4} {:>tw$} {:>9}",
            r.id,
            r.label,
            r.unit.name(),
            target,
            fmt_cell(&r.cells[0])
        );
        for peer in &r.cells[1..] {
            line += &format!(
                "  {:>9} {:>7}",
                fmt_cell(peer),
                fmt_ratio(&r.cells[0], peer)
            );
        }
        line += &format!("  {:>6}  {:>5}", r.vs_target(), r.vs_peers());
        out += line.trim_end();
        out.push('\n');
    }
    out
}
