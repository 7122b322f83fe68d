//! `amime-agent init`: installs the pod's traffic capture ([`CaptureSpec`]) in the pod's
//! network namespace, as the injected `amime-init` container does before any app starts.
//!
//! Rules it keeps:
//! - One transaction: everything goes through a single `iptables-restore --noflush` input:
//!   the earlier jumps into the `AMIME_*` chains are deleted (`-D`, found with
//!   `iptables-save -t nat`), the chains are declared (which creates or empties them) and
//!   filled, and the two jumps are added. A failure leaves the table as it was.
//! - Idempotent: running it again (a restarted init container) leaves exactly one set of rules.
//! - Backends: `iptables-save`/`iptables-restore` (nf_tables on current distributions), and the
//!   `-legacy` pair when the first is missing or does not work; a backend whose tables already
//!   hold a capture is used first (a rerun replaces it rather than adding a second set in the
//!   other backend's tables), and `--cleanup` cleans every backend holding one. Nothing else
//!   is needed.
//! - Clear failures: no iptables at all names the programs tried and the package the image
//!   needs; a refusal names the privileges the container needs.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use injector::capture::{CaptureSpec, CHAINS};

/// Seconds `iptables-restore` waits for the xtables lock (legacy backend).
const LOCK_WAIT_SECONDS: &str = "5";

/// A `-save`/`-restore` pair of one iptables backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub save: PathBuf,
    pub restore: PathBuf,
}

/// The backends tried, in order, when no `--iptables-restore` is given.
pub const DEFAULT_BACKENDS: [(&str, &str); 2] =
    [("iptables-save", "iptables-restore"), ("iptables-legacy-save", "iptables-legacy-restore")];

/// Why the capture could not be installed (or removed).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "no iptables found: tried {} on PATH={path:?}; the image needs the iptables package \
         (iptables-save and iptables-restore)",
        tried.join(", ")
    )]
    NotFound { tried: Vec<String>, path: String },
    #[error(
        "`{program}` was refused: {detail}. amime-agent init must run as root with the NET_ADMIN and \
         NET_RAW capabilities (the amime-init container's securityContext: runAsUser: 0, \
         capabilities.add: [NET_ADMIN, NET_RAW]); it runs as uid {uid}"
    )]
    NotPermitted { program: String, detail: String, uid: String },
    #[error("iptables did not work: {}", attempts.join("; "))]
    Failed { attempts: Vec<String> },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Install(CaptureSpec),
    Cleanup,
}

/// Earlier jumps into the capture's chains in `iptables-save -t nat` output, as `-D` rules
/// (from any chain that is not one of ours, so `PREROUTING`/`OUTPUT` and whatever else).
pub fn jumps_to_delete(save: &str) -> Vec<String> {
    save.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("-A ")?;
            let (chain, _) = rest.split_once(' ')?;
            let target = rest.split_whitespace().skip_while(|w| *w != "-j").nth(1)?;
            (!is_ours(chain) && is_ours(target)).then(|| format!("-D {rest}"))
        })
        .collect()
}

/// The capture's chains that exist (declared in `iptables-save -t nat` output), plus any
/// other `AMIME_*` chain an earlier version left.
pub fn existing_chains(save: &str) -> BTreeSet<String> {
    save.lines()
        .filter_map(|line| line.strip_prefix(':')?.split_whitespace().next())
        .filter(|chain| is_ours(chain))
        .map(str::to_string)
        .collect()
}

fn is_ours(chain: &str) -> bool {
    chain.starts_with("AMIME_")
}

/// The `iptables-restore --noflush` input for `action`, given the table as it is now.
/// `None`: nothing to do (cleanup of a table without our rules).
pub fn restore_input(action: &Action, save: &str) -> Option<String> {
    let deletes: String = jumps_to_delete(save).into_iter().map(|d| d + "\n").collect();
    match action {
        Action::Install(spec) => {
            // The deletions go first, inside the spec's own `*nat` ... `COMMIT`.
            let input = spec.restore_input();
            Some(match input.strip_prefix("*nat\n") {
                Some(body) => format!("*nat\n{deletes}{body}"),
                None => input,
            })
        }
        Action::Cleanup => {
            let chains = existing_chains(save);
            if chains.is_empty() && deletes.is_empty() {
                return None;
            }
            // Declaring a chain empties it; then no rule refers to any of them and they can go.
            let declare: String = chains.iter().map(|c| format!(":{c} - [0:0]\n")).collect();
            let remove: String = chains.iter().map(|c| format!("-X {c}\n")).collect();
            Some(format!("*nat\n{deletes}{declare}{remove}COMMIT\n"))
        }
    }
}

/// What `--dry-run` prints: the commands, and the restore input as it would be on a table
/// without earlier rules.
pub fn dry_run_text(action: &Action, backends: &[(String, String)]) -> String {
    let pairs: Vec<String> = backends.iter().map(|(s, r)| format!("{s}/{r}")).collect();
    let mut out = format!(
        "# amime-agent init --dry-run: nothing is changed.\n\
         # Backend: the first of {} that works.\n\
         # 1. `SAVE -t nat` lists the table; every earlier jump to an AMIME_* chain is deleted (-D)\n\
         #    in the same transaction, so running twice leaves one set of rules.\n\
         # 2. `RESTORE --noflush -w {LOCK_WAIT_SECONDS}` with this input:\n",
        pairs.join(", ")
    );
    let input = match action {
        Action::Install(spec) => spec.restore_input(),
        Action::Cleanup => {
            let example: String = CHAINS.iter().map(|c| format!(":{c}\n")).collect();
            let save = format!("{example}{}", CaptureSpec::default().jump_rules().join("\n"));
            restore_input(action, &save).unwrap_or_default()
        }
    };
    out.push_str(&input);
    out
}

/// Where `program` is on `path` (a `PATH` value); a name with a '/' is taken as given.
pub fn find_program(program: &Path, path: &str) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::split_paths(path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// `-save` beside a `-restore` program: `/sbin/iptables-legacy-restore` → `/sbin/iptables-legacy-save`.
pub fn save_for_restore(restore: &Path) -> PathBuf {
    let name = restore.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let save = match name.rsplit_once("restore") {
        Some((head, tail)) => format!("{head}save{tail}"),
        None => format!("{name}-save"),
    };
    restore.with_file_name(save)
}

/// True when iptables' message says the caller lacks the privilege.
pub fn is_permission_failure(stderr: &str) -> bool {
    ["Permission denied", "you must be root", "Operation not permitted"].iter().any(|s| stderr.contains(s))
}

/// The uid this process runs as (from `/proc/self/status`), for error messages.
fn current_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().nth(1).map(String::from)))
        })
        .flatten()
        .unwrap_or_else(|| "(unknown)".to_string())
}

/// One program run: its stdout, or its failure (exit status and stderr).
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let shown = format!("{} {}", program.display(), args.join(" "));
    let mut child = command.spawn().map_err(|e| format!("`{shown}`: cannot start: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(|e| format!("`{shown}`: writing its input: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("`{shown}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{shown}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// What was done with one backend.
#[derive(Debug)]
pub struct Applied {
    pub backend: Backend,
    /// The input given to `iptables-restore` (`None`: nothing to do).
    pub input: Option<String>,
    pub removed_jumps: usize,
}

/// True when an `iptables-save -t nat` listing holds (part of) a capture.
pub fn holds_capture(save: &str) -> bool {
    !existing_chains(save).is_empty() || !jumps_to_delete(save).is_empty()
}

/// Which of the working backends (each with its listing) to restore with, in order.
/// Install: the first that works, but one whose tables already hold a capture goes first, so
/// a rerun replaces it instead of adding a second set in the other backend's tables.
/// Cleanup: every backend holding a capture (or the first, to report that there is none).
pub fn restore_order<T: Clone>(action: &Action, listed: &[(T, String)]) -> Vec<(T, String)> {
    let (holding, others): (Vec<_>, Vec<_>) = listed.iter().cloned().partition(|(_, save)| holds_capture(save));
    match action {
        Action::Install(_) => holding.into_iter().chain(others).collect(),
        Action::Cleanup if holding.is_empty() => others.into_iter().take(1).collect(),
        Action::Cleanup => holding,
    }
}

/// Installs (with the first backend that works) or removes (from every backend) the capture.
pub fn apply(action: &Action, backends: &[(String, String)], path: &str) -> Result<Vec<Applied>, InitError> {
    let refused = |program: &Path, detail: String| InitError::NotPermitted {
        program: program.display().to_string(),
        detail,
        uid: current_uid(),
    };
    let mut not_found = Vec::new();
    let mut attempts = Vec::new();
    let mut listed = Vec::new();
    for (save, restore) in backends {
        let found = (find_program(Path::new(save), path), find_program(Path::new(restore), path));
        let (Some(save), Some(restore)) = found else {
            not_found.push(format!("{save} and {restore}"));
            continue;
        };
        match run(&save, &["-t", "nat"], None) {
            Ok(listing) => listed.push((Backend { save, restore }, listing)),
            Err(e) if is_permission_failure(&e) => return Err(refused(&save, e)),
            Err(e) => attempts.push(e),
        }
    }
    let mut applied = Vec::new();
    let mut restore_failed = false;
    for (backend, save) in restore_order(action, &listed) {
        let input = restore_input(action, &save);
        if let Some(input) = &input {
            match run(&backend.restore, &["--noflush", "-w", LOCK_WAIT_SECONDS], Some(input)) {
                Ok(_) => {}
                Err(e) if is_permission_failure(&e) => return Err(refused(&backend.restore, e)),
                Err(e) => {
                    attempts.push(e);
                    restore_failed = true;
                    continue;
                }
            }
        }
        applied.push(Applied { backend, input, removed_jumps: jumps_to_delete(&save).len() });
        if matches!(action, Action::Install(_)) {
            break;
        }
    }
    // An install needs one backend; a cleanup must not leave a capture it found behind.
    let complete = matches!(action, Action::Install(_)) || !restore_failed;
    if !applied.is_empty() && complete {
        return Ok(applied);
    }
    if attempts.is_empty() {
        return Err(InitError::NotFound { tried: not_found, path: path.to_string() });
    }
    attempts.extend(not_found.into_iter().map(|p| format!("{p}: not found on PATH")));
    Err(InitError::Failed { attempts })
}

/// The backends for an optional `--iptables-restore PATH` (then only that one, its `-save`
/// beside it).
pub fn backends(iptables_restore: Option<&Path>) -> Vec<(String, String)> {
    match iptables_restore {
        Some(restore) => vec![(save_for_restore(restore).display().to_string(), restore.display().to_string())],
        None => DEFAULT_BACKENDS.iter().map(|(s, r)| (s.to_string(), r.to_string())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:AMIME_INBOUND - [0:0]
:AMIME_IN_REDIRECT - [0:0]
:AMIME_OUTPUT - [0:0]
:AMIME_REDIRECT - [0:0]
:AMIME_OLD - [0:0]
:KUBE-X - [0:0]
-A PREROUTING -p tcp -j AMIME_INBOUND
-A PREROUTING -p tcp -j AMIME_INBOUND
-A OUTPUT -p tcp -j AMIME_OUTPUT
-A OUTPUT -d 10.0.0.1/32 -p tcp -j KUBE-X
-A AMIME_INBOUND -p tcp -j AMIME_IN_REDIRECT
-A AMIME_OUTPUT -j AMIME_REDIRECT
-A AMIME_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";

    #[test]
    fn earlier_jumps_are_deleted_in_the_same_transaction() {
        assert_eq!(
            jumps_to_delete(SAVE),
            vec![
                "-D PREROUTING -p tcp -j AMIME_INBOUND",
                "-D PREROUTING -p tcp -j AMIME_INBOUND",
                "-D OUTPUT -p tcp -j AMIME_OUTPUT"
            ]
        );
        let input = restore_input(&Action::Install(CaptureSpec::default()), SAVE).unwrap();
        let want_start = "*nat\n-D PREROUTING -p tcp -j AMIME_INBOUND\n-D PREROUTING -p tcp -j AMIME_INBOUND\n\
                          -D OUTPUT -p tcp -j AMIME_OUTPUT\n:AMIME_INBOUND - [0:0]\n";
        assert!(input.starts_with(want_start), "{input}");
        assert!(input.ends_with("-A OUTPUT -p tcp -j AMIME_OUTPUT\nCOMMIT\n"), "{input}");
        assert_eq!(input.matches("*nat").count(), 1);
        // A fresh table: just the spec's own input.
        let fresh = restore_input(&Action::Install(CaptureSpec::default()), "*nat\nCOMMIT\n").unwrap();
        assert_eq!(fresh, CaptureSpec::default().restore_input());
    }

    #[test]
    fn cleanup_empties_then_removes_every_amime_chain() {
        let input = restore_input(&Action::Cleanup, SAVE).unwrap();
        let lines: Vec<&str> = input.lines().collect();
        let pos = |l: &str| lines.iter().position(|x| *x == l).unwrap_or_else(|| panic!("no {l:?} in {input}"));
        for chain in ["AMIME_INBOUND", "AMIME_IN_REDIRECT", "AMIME_OUTPUT", "AMIME_REDIRECT", "AMIME_OLD"] {
            assert!(pos(&format!(":{chain} - [0:0]")) < pos(&format!("-X {chain}")));
            assert!(pos("-D OUTPUT -p tcp -j AMIME_OUTPUT") < pos(&format!("-X {chain}")));
        }
        assert!(!input.contains("KUBE-X"), "{input}");
        assert_eq!(restore_input(&Action::Cleanup, "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"), None);
    }

    #[test]
    fn dry_run_shows_commands_and_input() {
        let text = dry_run_text(&Action::Install(CaptureSpec::default()), &backends(None));
        assert!(text.contains("nothing is changed"), "{text}");
        assert!(text.contains("iptables-save/iptables-restore, iptables-legacy-save/iptables-legacy-restore"));
        assert!(text.ends_with(&CaptureSpec::default().restore_input()), "{text}");
        let cleanup = dry_run_text(&Action::Cleanup, &backends(Some(Path::new("/sbin/iptables-legacy-restore"))));
        assert!(cleanup.contains("/sbin/iptables-legacy-save//sbin/iptables-legacy-restore"), "{cleanup}");
        assert!(cleanup.contains("-D PREROUTING -p tcp -j AMIME_INBOUND\n"), "{cleanup}");
        assert!(cleanup.contains("-X AMIME_REDIRECT\n"), "{cleanup}");
    }

    #[test]
    fn a_backend_holding_the_capture_goes_first() {
        let empty = "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n".to_string();
        let listed = vec![("nft", empty.clone()), ("legacy", SAVE.to_string())];
        fn names(v: Vec<(&'static str, String)>) -> Vec<&'static str> {
            v.into_iter().map(|(n, _)| n).collect()
        }
        let install = Action::Install(CaptureSpec::default());
        assert_eq!(names(restore_order(&install, &listed)), ["legacy", "nft"]);
        assert_eq!(names(restore_order(&Action::Cleanup, &listed)), ["legacy"]);
        let fresh = vec![("nft", empty.clone()), ("legacy", empty)];
        assert_eq!(names(restore_order(&install, &fresh)), ["nft", "legacy"]);
        assert_eq!(names(restore_order(&Action::Cleanup, &fresh)), ["nft"]);
        let both = vec![("nft", SAVE.to_string()), ("legacy", SAVE.to_string())];
        assert_eq!(names(restore_order(&Action::Cleanup, &both)), ["nft", "legacy"]);
    }

    #[test]
    fn save_program_sits_beside_restore() {
        for (restore, save) in [
            ("/usr/sbin/iptables-restore", "/usr/sbin/iptables-save"),
            ("iptables-legacy-restore", "iptables-legacy-save"),
            ("/opt/bin/iptables-nft-restore", "/opt/bin/iptables-nft-save"),
            ("/opt/xtables", "/opt/xtables-save"),
        ] {
            assert_eq!(save_for_restore(Path::new(restore)), PathBuf::from(save));
        }
    }

    #[test]
    fn refusals_are_recognised() {
        for msg in [
            "iptables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
            "Fatal: can't open lock file /run/xtables.lock: Permission denied",
            "iptables-save v1.8.9 (legacy): Cannot initialize: Operation not permitted",
        ] {
            assert!(is_permission_failure(msg), "{msg}");
        }
        assert!(!is_permission_failure("iptables-restore: line 3 failed"));
    }

    #[test]
    fn missing_programs_name_what_was_tried() {
        let dir = std::env::temp_dir();
        let err = apply(&Action::Cleanup, &backends(None), &dir.join("amime-agent-no-such-dir").display().to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("iptables-save and iptables-restore, iptables-legacy-save and iptables-legacy-restore"));
        assert!(err.contains("the image needs the iptables package"), "{err}");
    }
}
