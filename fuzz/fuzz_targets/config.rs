//! Fuzz the kerneld.conf parser: any text is a configuration or an error
//! that names a line of it, never a panic, and what it accepts stays
//! within the documented ranges (kerneld.conf(5)).
#![no_main]

use kerneld::config::Config;
use kerneld::limits;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Relative includes resolve under a directory that does not exist.
    let origin = Path::new("/nonexistent-kerneld-fuzz/kerneld.conf");
    match Config::from_text(origin, &text) {
        Ok(c) => {
            if let Some(d) = c.delay {
                assert!((limits::DELAY.min..=limits::DELAY.max).contains(&d));
            }
            assert!(c.negative_cache.as_secs() <= limits::NEGATIVE_CACHE.max);
            assert!(u64::from(c.rate_limit_per_minute) <= limits::RATE_LIMIT.max);
            let w = c.max_workers as u64;
            assert!((limits::MAX_WORKERS.min..=limits::MAX_WORKERS.max).contains(&w));
            // The policy it built describes itself without a panic.
            let _ = c.policy.describe();
        }
        Err(e) => {
            assert!(!e.problem.is_empty());
            // An error in the text itself names one of its lines (one in
            // an included file names that file).
            if e.file == origin.display().to_string() {
                let lines = text.lines().count();
                assert!(e.line <= lines.max(1), "line {} of {lines}: {e}", e.line);
            }
        }
    }
});
