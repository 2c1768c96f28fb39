//! Runs the real `recur` binary.

use std::process::{Command, Output};

fn recur(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recur")).args(args).output().expect("the recur binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn version_prints_the_package_version() {
    let output = recur(&["--version"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output).trim(), format!("recur {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_the_info_command() {
    let output = recur(&["--help"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("info"), "{}", stdout(&output));
}

#[test]
fn info_prints_version_and_thread_count() {
    let output = Command::new(env!("CARGO_BIN_EXE_recur"))
        .arg("info")
        .env("RAYON_NUM_THREADS", "3")
        .output()
        .expect("the recur binary runs");
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.contains(&format!("recur {}", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("threads: 3"), "{text}");
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [&[][..], &["no-such-command"][..]] {
        let output = recur(args);
        assert_eq!(output.status.code(), Some(2), "recur {args:?}");
        assert!(!output.stderr.is_empty(), "recur {args:?} explains itself on stderr");
    }
}
