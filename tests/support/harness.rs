//! The test harness of the binaries whose tests need a server or a browser
//! (`redis`, `postgres`, `demo`: `harness = false` in Cargo.toml), built on
//! libtest-mimic, so that a test whose backend is missing is reported as
//! *ignored*, never as passed.
//!
//! Each binary lists its tests ([`tests!`], and `store_tests!` for the
//! store-generic checks) with the [`Backend`] each needs, and hands them to
//! [`main`]. That decides once, before any test runs and without starting
//! anything, which backends can be had. The tests of a missing one are
//! marked ignored and a notice after the summary says why; with
//! `CLOAKROOM_REQUIRE_BACKENDS=1` (as in `.ci/run`) they fail instead. A
//! test run anyway (`--ignored`, `--include-ignored`) fails with the same
//! reason: it cannot pass without its backend.
//!
//! The command line is libtest's: a name filter, `--exact`, `--skip`,
//! `--list`, `--ignored`, `--include-ignored`, `--test-threads` (or
//! `RUST_TEST_THREADS`). Output is not captured: what a test prints shows
//! as it runs, and a failure's panic message is repeated in the summary.
//! Each test runs on a thread named after it, like libtest's, which its
//! own runtime (`#[tokio::main]` on the test function) and the log capture
//! of `support::logs` rely on.
//!
//! Without libtest, `#[test]` and `#[tokio::test]` compile to nothing, so a
//! test written that way in these binaries would silently never run:
//! [`main`] refuses to start while one is in the binary's folder.

use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};

use super::backend::backends_required;

/// A server or program that some tests need.
pub(crate) struct Backend {
    /// Its name in notices and failures ("Redis", "PostgreSQL").
    pub(crate) name: &'static str,
    /// Why it cannot be had here, or `None` when it can. Only looks (at the
    /// environment, for installed binaries); starts nothing.
    pub(crate) missing: fn() -> Option<String>,
}

/// One test: its libtest name, what it needs, and the function that runs
/// it (on a runtime of its own; it panics when it fails).
pub(crate) struct Test {
    name: String,
    needs: Option<&'static Backend>,
    run: fn(),
}

impl Test {
    /// The test `run`, named `name` in `module` (a `module_path!()`, whose
    /// first segment, the crate, libtest leaves out of test names).
    pub(crate) fn new(
        module: &str,
        name: &str,
        needs: Option<&'static Backend>,
        run: fn(),
    ) -> Self {
        let name = match module.split_once("::") {
            Some((_crate, path)) => format!("{path}::{name}"),
            None => name.to_owned(),
        };
        Self { name, needs, run }
    }
}

/// The tests of the calling module, each function named once, grouped by
/// what they need (`None`, or `Some(&crate::REDIS)`):
///
/// ```ignore
/// tests!(
///     None => [a_test_without_a_server],
///     Some(&crate::POSTGRES) => [a_test, another_test],
/// )
/// ```
///
/// Test functions are plain `fn()`s running on a runtime of their own:
/// `#[tokio::main(flavor = "current_thread")] async fn ...` in place of
/// `#[tokio::test]`. One left out of the list is dead code, which the
/// lints deny.
macro_rules! tests {
    ($($needs:expr => [$($test:ident),* $(,)?]),* $(,)?) => {
        vec![$($(
            $crate::support::harness::Test::new(
                module_path!(),
                stringify!($test),
                $needs,
                $test,
            ),
        )*)*]
    };
}
pub(crate) use tests;

/// Runs `tests` as libtest would, with the tests of missing backends
/// ignored (or failing, when backends are required), and the notices
/// saying why after the summary.
///
/// `main_file` is the binary's `file!()`: the files beside it must hold no
/// libtest test attribute, which would compile to nothing here.
pub(crate) fn main(main_file: &str, mut tests: Vec<Test>) -> ExitCode {
    refuse_libtest_attributes(main_file);
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok());
    }
    let required = backends_required();

    // Each backend is looked at once, in the order tests first need them.
    let mut verdicts: Vec<(&'static Backend, Option<String>, usize)> = Vec::new();
    for backend in tests.iter().filter_map(|test| test.needs) {
        match verdicts.iter_mut().find(|(b, ..)| b.name == backend.name) {
            Some((.., count)) => *count += 1,
            None => verdicts.push((backend, (backend.missing)(), 1)),
        }
    }
    let why_missing = |test: &Test| {
        let backend = test.needs?;
        let (_, why, _) = verdicts.iter().find(|(b, ..)| b.name == backend.name)?;
        let why = why.as_ref()?;
        let mut message = format!("{} is unavailable: {why}", backend.name);
        if required {
            message.push_str(" (and CLOAKROOM_REQUIRE_BACKENDS=1 requires it)");
        }
        Some(message)
    };

    // libtest runs tests in the order of their names.
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    let trials = tests
        .into_iter()
        .map(|test| {
            let missing = why_missing(&test);
            let ignored = missing.is_some() && !required;
            let Test { name, run, .. } = test;
            Trial::test(name.clone(), move || match missing {
                Some(why) => Err(Failed::from(why)),
                None => run_on_its_own_thread(name, run),
            })
            .with_ignored_flag(ignored)
        })
        .collect();

    let conclusion = libtest_mimic::run(&args, trials);

    if !args.list {
        for (backend, why, count) in &verdicts {
            let Some(why) = why else { continue };
            let name = backend.name;
            let (tests, they) = if *count == 1 {
                ("test needs", "it fails")
            } else {
                ("tests need", "they fail")
            };
            if required {
                eprintln!(
                    "NOTICE: {count} {tests} {name}, which is unavailable ({why}); \
                     {they}, as CLOAKROOM_REQUIRE_BACKENDS=1 asks"
                );
            } else if args.ignored || args.include_ignored {
                eprintln!(
                    "NOTICE: {count} {tests} {name}, which is unavailable ({why}); \
                     run as asked (--ignored, --include-ignored), {they}"
                );
            } else {
                eprintln!(
                    "NOTICE: {count} {tests} {name}, reported ignored (not run): {why}; \
                     CLOAKROOM_REQUIRE_BACKENDS=1 makes that a failure"
                );
            }
        }
    }
    conclusion.exit_code()
}

/// Runs a test on a thread named after it (as libtest does, so that panic
/// messages say which test panicked), and turns a panic into a failure.
fn run_on_its_own_thread(name: String, run: fn()) -> Result<(), Failed> {
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(run)
        .map_err(|e| Failed::from(format!("cannot start the test's thread: {e}")))?;
    thread.join().map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(a panic without a message)");
        Failed::from(format!("test panicked: {message}"))
    })
}

/// Panics if a file of this binary (the `.rs` files in the folder of
/// `main_file`) has a `#[test]` or `#[tokio::test]` attribute: without
/// libtest's harness such a test is silently compiled out, so a test added
/// that way would never run. (Only looks when the sources are there.)
fn refuse_libtest_attributes(main_file: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(dir) = root.join(main_file).parent().map(ToOwned::to_owned) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut found = Vec::new();
    for path in entries.flatten().map(|entry| entry.path()) {
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("#[test]") || line.starts_with("#[tokio::test") {
                found.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "this test binary runs on support::harness (harness = false), where libtest's \
         test attributes compile to nothing: write `#[tokio::main(flavor = \"current_thread\")]` \
         (or the runtime the test needs) and list the function in its module's `tests()`:\n{}",
        found.join("\n")
    );
}
