//! `kerneld-test-validate SCHEMA`: validate each line of standard input, a
//! JSON document, against the JSON Schema in the file SCHEMA; print what
//! does not match and exit 1 if any line does not.  tests/vm/run uses it
//! on the documents the guests print (`kdstat --json`, `kdstat why
//! --json`) after real requests, denials and loads.

use std::io::BufRead;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: kerneld-test-validate SCHEMA < DOCUMENTS (one JSON document a line)");
        return ExitCode::from(2);
    };
    let schema: serde_json::Value = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_slice(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kerneld-test-validate: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("kerneld-test-validate: {path} is not a JSON Schema: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut good, mut bad) = (0, 0);
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let doc: serde_json::Value = match serde_json::from_str(&line) {
            Ok(d) => d,
            Err(e) => {
                println!("document {}: not JSON: {e}", n + 1);
                bad += 1;
                continue;
            }
        };
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            good += 1;
        } else {
            println!("document {}: {}", n + 1, errors.join("; "));
            bad += 1;
        }
    }
    println!("{good} valid, {bad} invalid against {path}");
    if bad > 0 || good == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
