//! Named conformance checks: each assertion of a ported upstream test is recorded as pass or
//! fail without panicking, so one divergence does not hide the checks after it. At the end,
//! `finish` prints `conformance <suite>: P of N checks pass` and requires the failed set to be
//! exactly the suite's list of known divergences: a new failure fails the test, and so does a
//! divergence that has been fixed but is still listed.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Mutex;

pub struct Checks {
    suite: &'static str,
    results: Mutex<Vec<(String, bool)>>,
}

impl Checks {
    pub fn new(suite: &'static str) -> Self {
        Checks {
            suite,
            results: Mutex::new(Vec::new()),
        }
    }

    /// Record check `name`; on failure print `detail` (what was seen). Returns `ok`.
    pub fn check(&self, name: &str, ok: bool, detail: impl FnOnce() -> String) -> bool {
        if ok {
            println!("  pass  {name}");
        } else {
            println!("  FAIL  {name}: {}", detail());
        }
        self.results
            .lock()
            .expect("checks lock")
            .push((name.to_string(), ok));
        ok
    }

    /// Record check `name`: `actual == expected`.
    pub fn eq<T: PartialEq + Debug>(&self, name: &str, actual: T, expected: T) -> bool {
        let ok = actual == expected;
        self.check(name, ok, || {
            format!("expected {expected:?}, got {actual:?}")
        })
    }

    /// Record check `name`: `haystack` contains `needle` (`kube::test::if_has_string`).
    pub fn has(&self, name: &str, haystack: &str, needle: &str) -> bool {
        self.check(name, haystack.contains(needle), || {
            format!("{needle:?} not in {haystack:?}")
        })
    }

    /// Record check `name`: `haystack` does not contain `needle` (`if_has_not_string`).
    pub fn has_not(&self, name: &str, haystack: &str, needle: &str) -> bool {
        self.check(name, !haystack.contains(needle), || {
            format!("{needle:?} found in {haystack:?}")
        })
    }

    /// Print the tally and require the failed checks to be exactly `known` (name, why).
    pub fn finish(&self, known: &[(&str, &str)]) {
        let results = self.results.lock().expect("checks lock");
        let mut names = BTreeSet::new();
        for (name, _) in results.iter() {
            assert!(names.insert(name.as_str()), "check name used twice: {name}");
        }
        let failed: BTreeSet<&str> = results
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| n.as_str())
            .collect();
        let passed = results.len() - failed.len();
        println!(
            "conformance {}: {passed} of {} checks pass",
            self.suite,
            results.len()
        );
        let known_names: BTreeSet<&str> = known.iter().map(|(n, _)| *n).collect();
        for (name, why) in known {
            assert!(
                names.contains(name),
                "KNOWN_DIVERGENCES names a check that does not exist: {name}"
            );
            if failed.contains(name) {
                println!("  known divergence: {name}: {why}");
            }
        }
        let new: Vec<&&str> = failed.difference(&known_names).collect();
        let fixed: Vec<&&str> = known_names.difference(&failed).collect();
        assert!(
            new.is_empty() && fixed.is_empty(),
            "conformance {}: failed checks not in KNOWN_DIVERGENCES: {new:?}; \
             listed in KNOWN_DIVERGENCES but passing now (remove them): {fixed:?}",
            self.suite
        );
    }
}
