//! The log lines of the request path: a request's line, written once
//! its answer is sent, which carries the policy's decision when it denied
//! (or, in audit mode, would have).

use crate::backend::Provenance;
use crate::operator::log;
use crate::policy::Decision;
use crate::who::requester::Requester;
use std::sync::Mutex;
use std::time::Duration;

/// The log line of a request, written by whoever settled it once it may be
/// (after the answer is sent).  None: nothing to log.
#[derive(Debug, Default)]
pub(crate) struct LogLine {
    /// The level, the kind (its MESSAGE_ID) and the text, without the
    /// requester's part, which goes after [`HEAD`].
    pub(super) line: Option<(log::Level, log::Event, String)>,
    /// The journal's fields (REQUEST=, STATUS=, REQUESTER_*=), built only
    /// while the journal is present.
    pub(super) fields: log::Fields,
}

impl LogLine {
    /// Write the line: `request_module`, ` for` the requester `who` (the
    /// request's), then the rest.  The requester's part is made here,
    /// after the answer, because it is the costliest part of the line.
    pub(crate) fn emit(self, who: Option<&Requester>) {
        if let Some((level, event, mut l)) = self.line {
            if who.is_some() && l.starts_with(HEAD) {
                l.insert_str(HEAD.len(), &for_whom(who));
            }
            log::event(level, event, &self.fields, &l);
        }
    }
}

/// Quick answers' lines, made and written by the log thread
/// ([`log::later`]); two lists that trade places, so that neither side
/// allocates once they have grown.
type Kept = Vec<(LogLine, Option<Requester>)>;
static KEPT: Mutex<Kept> = Mutex::new(Vec::new());
static SPARE: Mutex<Kept> = Mutex::new(Vec::new());

impl LogLine {
    /// [`emit`](Self::emit) on the log thread, for a quick answer: its
    /// receive thread reads the next message at once.
    pub(crate) fn emit_later(self, who: Option<Requester>) {
        if self.line.is_some() {
            log::lock(&KEPT).push((self, who));
            log::later(write_kept);
        }
    }
}

fn write_kept() {
    let mut batch = std::mem::take(&mut *log::lock(&SPARE));
    std::mem::swap(&mut batch, &mut *log::lock(&KEPT));
    for (line, who) in batch.drain(..) {
        line.emit(who.as_ref());
    }
    *log::lock(&SPARE) = batch;
}

/// How a request's line starts; the requester's part follows.
pub(super) const HEAD: &str = "request_module";

/// What the policy said of a denied or would-be-denied request, for the
/// request's one line and the audit record.
#[derive(Debug, Default, Clone)]
pub(super) struct Denial {
    /// Audit mode: the request goes ahead.
    pub(crate) would: bool,
    /// The rule that (would have) denied, with its file and line.
    pub(crate) rule: String,
    /// The modules the request would load (none: decided on the name).
    pub(crate) closure: Vec<String>,
    /// The module a module rule denied, if it is not in the closure.
    pub(crate) module: Option<String>,
    /// What the line adds after the rule: ` (module m, unsigned, in-tree)`
    /// when a module rule decided.
    pub(crate) detail: String,
}

impl Denial {
    pub(super) fn new(
        closure: &[String],
        d: &Decision,
        provenance: Option<&Option<Provenance>>,
    ) -> Denial {
        Denial {
            would: d.would_deny,
            rule: d.rule.clone(),
            closure: closure.to_vec(),
            module: d.module.clone().filter(|m| !closure.iter().any(|c| c == m)),
            detail: d
                .module
                .as_ref()
                .map_or(String::new(), |m| match provenance {
                    Some(p) => format!(" (module {m}, {})", describe_provenance(p.as_ref())),
                    None => format!(" (module {m})"),
                }),
        }
    }

    /// The text a request's line carries: `RULE (module m, ...) -> [a b]`.
    pub(super) fn text(&self) -> String {
        format!(
            "{}{} -> [{}]",
            self.rule,
            self.detail,
            self.closure.join(" ")
        )
    }

    /// The journal's fields of the decision: MODULE= (the closure, else
    /// the name), POLICY_RULE=.
    pub(super) fn fields(&self, name: &str, fields: &mut log::Fields) {
        for m in &self.closure {
            fields.push("MODULE", m);
        }
        if self.closure.is_empty() {
            fields.push("MODULE", name);
        }
        if let Some(m) = &self.module {
            fields.push("MODULE", m);
        }
        fields.push("POLICY_RULE", &self.rule);
    }
}

/// `signed by NAME, in-tree`, or `unsigned, out-of-tree`, for log lines.
pub(crate) fn describe_provenance(p: Option<&Provenance>) -> String {
    let Some(p) = p else {
        return "provenance unreadable".into();
    };
    let signed = match (p.signed, p.signer.is_empty()) {
        (false, _) => "unsigned".to_string(),
        (true, true) => "signed".to_string(),
        (true, false) => format!("signed by {}", p.signer),
    };
    format!(
        "{signed}, {}",
        if p.intree { "in-tree" } else { "out-of-tree" }
    )
}

/// ` for pid P uid U ...` after a request's name in log lines, or nothing.
pub(crate) fn for_whom(who: Option<&Requester>) -> String {
    let Some(r) = who else {
        return String::new();
    };
    let mut s = String::with_capacity(53 + r.comm.len() + r.cgroup.len());
    s.push_str(" for ");
    r.describe_into(&mut s);
    s
}

/// Append `d` in milliseconds with one decimal (what `{:.1}` prints for the
/// same value as a float, up to the rounding of exact ties), from integers.
pub(super) fn push_millis(s: &mut String, d: Duration) {
    // u64 nanoseconds (584 years) spare the 128-bit division of as_nanos().
    let nanos = d
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()));
    let tenths = (nanos / 50_000).div_ceil(2);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = tenths / 10;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("?"));
    s.push('.');
    s.push(char::from(b'0' + (tenths % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_are_written_with_one_decimal_as_the_float_format_would() {
        for (nanos, want) in [
            (0u64, "0.0"),
            (49_999, "0.0"),
            (50_001, "0.1"),
            (1_234_567, "1.2"),
            (9_960_000, "10.0"),
            (123_456_789_000, "123456.8"),
        ] {
            let mut s = String::new();
            push_millis(&mut s, Duration::from_nanos(nanos));
            assert_eq!(s, want, "{nanos} ns");
            let float = format!("{:.1}", Duration::from_nanos(nanos).as_secs_f64() * 1000.0);
            assert_eq!(s, float, "{nanos} ns");
        }
        let mut s = String::new();
        push_millis(&mut s, Duration::MAX);
        assert!(s.ends_with(|c: char| c.is_ascii_digit()), "{s}");
    }
}
