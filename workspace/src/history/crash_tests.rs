//! The commit protocol under crashes and full disks: a commit of
//! `dnsd.toml` and a zone is killed (a panic carrying `fault::Crash`, which
//! skips every error path as a crash does) or refused space at every hook
//! point of `fault::STEPS`, and the workspace must then settle to exactly
//! the old or exactly the new generation.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

use super::*;

const TOML_OLD: &str =
    "[[service]]\nname = \"www.a.test.\"\naddresses = [\"198.18.0.2\"]\nttl = 60\n";
const TOML_NEW: &str =
    "[[service]]\nname = \"www.a.test.\"\naddresses = [\"198.18.0.3\"]\nttl = 60\n";
const ZONE_OLD: &str = "$ORIGIN a.test.\napp IN A 198.18.0.1\n";
const ZONE_NEW: &str = "$ORIGIN a.test.\napp IN A 198.18.0.11\n";
const RULES: &str = "[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.3:80\"\n";

/// A workspace whose history holds the old generation (1), and the change
/// to the new one: `dnsd.toml` and the zone both change.
fn before_the_commit() -> (tempfile::TempDir, Workspace, Vec<FileChange>) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("zones")).unwrap();
    fs::write(dir.path().join("dnsd.toml"), TOML_OLD).unwrap();
    fs::write(dir.path().join("zones/a.test.zone"), ZONE_OLD).unwrap();
    fs::write(dir.path().join("redirector.toml"), RULES).unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    assert_eq!(ws.commit(&[], "as found", |_| Ok(())).unwrap().number, 1);
    let changes = vec![
        FileChange {
            path: "dnsd.toml".into(),
            content: Some(TOML_NEW.into()),
        },
        FileChange {
            path: "zones/a.test.zone".into(),
            content: Some(ZONE_NEW.into()),
        },
    ];
    (dir, ws, changes)
}

fn old_files(ws: &Workspace) -> Files {
    ws.generation_files(1).unwrap()
}

fn new_files(ws: &Workspace) -> Files {
    let mut files = old_files(ws);
    files.insert("dnsd.toml".into(), TOML_NEW.into());
    files.insert("zones/a.test.zone".into(), ZONE_NEW.into());
    files
}

/// What a fault did to a commit.
enum Outcome {
    Crashed,
    Failed(HistoryError),
    Done,
}

fn commit_with(plan: &str, ws: &Workspace, changes: &[FileChange]) -> Outcome {
    let _armed = fault::arm(plan);
    match catch_unwind(AssertUnwindSafe(|| {
        ws.commit(changes, "the change", |_| Ok(()))
    })) {
        Err(p) if p.is::<fault::Crash>() => Outcome::Crashed,
        Err(p) => resume_unwind(p),
        Ok(Err(e)) => Outcome::Failed(e),
        Ok(Ok(_)) => Outcome::Done,
    }
}

/// Every file and directory under `dir`, by path.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        out.push(path.clone());
        if entry.file_type().unwrap().is_dir() {
            out.extend(tree(&path));
        }
    }
    out
}

/// No temp file and no staged generation is left anywhere.
fn assert_clean(ws: &Workspace, at: &str) {
    let stray: Vec<PathBuf> = tree(ws.root())
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".cutover-tmp") || name.ends_with(".tmp")
        })
        .collect();
    assert!(stray.is_empty(), "{at}: left behind {stray:?}");
}

/// Settles `ws` as a daemon starting would, and says which generation it
/// reads: exactly the old one (1) or exactly the new one (2).
fn settled_generation(ws: &Workspace, at: &str) -> u64 {
    let settled = ws.settled();
    assert!(
        matches!(
            settled.settlement(),
            Settlement::Live | Settlement::Finished(2)
        ),
        "{at}: {}",
        settled.settlement()
    );
    let read = read_managed(settled.root()).unwrap();
    drop(settled);
    let n = if read == old_files(ws) {
        1
    } else if read == new_files(ws) {
        2
    } else {
        panic!("{at}: the workspace reads as neither generation: {read:?}")
    };
    assert_eq!(ws.live_files().unwrap(), read, "{at}: the live files");
    assert_eq!(ws.current_generation().unwrap(), Some(n), "{at}: current");
    n
}

#[test]
fn a_two_file_commit_killed_at_any_step_settles_to_the_old_or_the_new_generation() {
    let mut points = Vec::new();
    for step in fault::STEPS {
        for nth in 1.. {
            let at = format!("after:{step}:{nth}");
            let (_dir, ws, changes) = before_the_commit();
            match commit_with(&at, &ws, &changes) {
                Outcome::Crashed => {}
                Outcome::Done => break,
                Outcome::Failed(e) => panic!("{at}: {e}"),
            }
            points.push(at.clone());
            let sealed = ws.generation_root(2).is_dir();
            let n = settled_generation(&ws, &at);
            assert_eq!(n, if sealed { 2 } else { 1 }, "{at}: sealed means new");
            // The next writer cleans up and goes on from there, numbering
            // on without a gap or a "hand edits" generation.
            let g = ws
                .commit(
                    &[FileChange {
                        path: "zones/b.test.zone".into(),
                        content: Some(b"$ORIGIN b.test.\n".to_vec()),
                    }],
                    "next",
                    |_| Ok(()),
                )
                .unwrap();
            assert_eq!(g.number, n + 1, "{at}");
            assert_clean(&ws, &at);
            let messages: Vec<String> = ws
                .generations()
                .unwrap()
                .into_iter()
                .map(|g| g.message)
                .collect();
            assert!(
                !messages.iter().any(|m| m.contains("hand edits")),
                "{at}: {messages:?}"
            );
        }
    }
    // stage: dnsd.toml, redirector.toml, the zone and GENERATION.toml;
    // prepare: the two files and `current`; install: the two files.
    let expected = [
        "after:stage:1",
        "after:stage:2",
        "after:stage:3",
        "after:stage:4",
        "after:validate:1",
        "after:prepare:1",
        "after:prepare:2",
        "after:prepare:3",
        "after:seal:1",
        "after:install:1",
        "after:install:2",
        "after:record:1",
    ];
    assert_eq!(points, expected);
}

#[test]
fn a_full_disk_at_any_step_before_the_commit_point_leaves_the_old_generation_untouched() {
    let mut points = 0;
    for step in fault::STEPS {
        for nth in 1.. {
            let at = format!("enospc:{step}:{nth}");
            let (_dir, ws, changes) = before_the_commit();
            let e = match commit_with(&at, &ws, &changes) {
                Outcome::Done => break,
                Outcome::Failed(e) => e,
                Outcome::Crashed => panic!("{at}: crashed"),
            };
            points += 1;
            assert!(e.to_string().contains("No space left"), "{at}: {e}");
            let before_the_commit_point = ["stage", "validate", "prepare", "seal"];
            if before_the_commit_point.contains(step) {
                assert!(matches!(e, HistoryError::Io { .. }), "{at}: {e}");
                // Nothing left to settle: the failed commit cleaned up.
                assert_clean(&ws, &at);
                assert_eq!(ws.live_files().unwrap(), old_files(&ws), "{at}");
                assert_eq!(settled_generation(&ws, &at), 1, "{at}");
            } else {
                assert!(
                    matches!(e, HistoryError::Unfinished { number: 2, .. }),
                    "{at}: {e}"
                );
                assert_eq!(settled_generation(&ws, &at), 2, "{at}");
                assert_clean(&ws, &at);
            }
        }
    }
    assert_eq!(points, 12);
}

#[test]
fn an_interrupted_commit_that_cannot_be_finished_is_read_from_its_copy() {
    let (_dir, ws, changes) = before_the_commit();
    assert!(matches!(
        commit_with("after:install:1", &ws, &changes),
        Outcome::Crashed
    ));
    // The temp file of the second file is lost, and the disk is full.
    let zone = ws.zones_dir().join("a.test.zone");
    fs::remove_file(durable::temp_beside(&zone)).unwrap();
    {
        let _armed = fault::arm("enospc:prepare:1");
        let settled = ws.settled();
        let Settlement::FromCopy { number: 2, why } = settled.settlement() else {
            panic!("{}", settled.settlement())
        };
        assert!(why.contains("No space left"), "{why}");
        assert_eq!(settled.root(), ws.generation_root(2));
        assert_eq!(read_managed(settled.root()).unwrap(), new_files(&ws));
        // A daemon loads it like a workspace.
        let dnsd = settled.workspace().load_dnsd().unwrap();
        assert_eq!(dnsd.services[0].addresses[0].to_string(), "198.18.0.3");
    }
    // A writer refuses to build on it while it cannot be finished...
    {
        let _armed = fault::arm("enospc:prepare:1");
        let e = ws.commit(&[], "more", |_| Ok(())).unwrap_err();
        assert!(
            matches!(e, HistoryError::Unfinished { number: 2, .. }),
            "{e}"
        );
    }
    // ...and once there is room the next reader finishes it.
    assert_eq!(ws.settled().settlement(), &Settlement::Finished(2));
    assert_eq!(ws.live_files().unwrap(), new_files(&ws));
    assert_clean(&ws, "finished");
}

#[test]
fn finishing_an_interrupted_commit_reuses_its_temp_files() {
    let (_dir, ws, changes) = before_the_commit();
    assert!(matches!(
        commit_with("after:seal:1", &ws, &changes),
        Outcome::Crashed
    ));
    let temp = durable::temp_beside(&ws.dnsd_path());
    let inode = fs::metadata(&temp).unwrap().ino();
    assert_eq!(ws.settled().settlement(), &Settlement::Finished(2));
    assert_eq!(fs::metadata(ws.dnsd_path()).unwrap().ino(), inode);
}

#[test]
fn a_commit_crashed_before_its_commit_point_is_discarded_with_its_temp_files() {
    let (_dir, ws, changes) = before_the_commit();
    assert!(matches!(
        commit_with("after:prepare:2", &ws, &changes),
        Outcome::Crashed
    ));
    assert!(durable::temp_beside(&ws.dnsd_path()).exists());
    // A reader reads the old generation, and leaves the rest to a writer.
    assert_eq!(ws.settled().settlement(), &Settlement::Live);
    assert_eq!(ws.live_files().unwrap(), old_files(&ws));
    ws.commit(&[], "nothing", |_| Ok(())).unwrap();
    assert_clean(&ws, "after the next writer");
}

#[test]
fn readers_see_one_generation_at_a_time() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_dir, ws, _) = before_the_commit();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ws, stop) = (ws.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut commits = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let tag = format!("# {commits}\n");
                let both = [
                    FileChange {
                        path: "dnsd.toml".into(),
                        content: Some(tag.clone().into_bytes()),
                    },
                    FileChange {
                        path: "zones/a.test.zone".into(),
                        content: Some(tag.into_bytes()),
                    },
                ];
                ws.commit(&both, "both", |_| Ok(())).unwrap();
                commits += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            commits
        })
    };
    for _ in 0..40 {
        let settled = ws.settled();
        let toml = fs::read(settled.root().join("dnsd.toml")).unwrap();
        // A reader as slow as a big zone's: a commit has time to land.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let zone = fs::read(settled.root().join("zones/a.test.zone")).unwrap();
        drop(settled);
        if toml.starts_with(b"#") {
            assert_eq!(toml, zone, "read half a commit");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().unwrap();
    assert!(commits > 5, "{commits} commits while 40 reads were made");
}

#[test]
fn a_workspace_without_history_is_read_as_it_is_and_left_so() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let settled = ws.settled();
    assert_eq!(settled.settlement(), &Settlement::Live);
    assert_eq!(settled.root(), dir.path());
    assert!(!dir.path().join(HISTORY_DIR).exists());
}

#[test]
fn rewritten_files_keep_their_mode_and_owner_and_the_history_is_private() {
    let (dir, ws, changes) = before_the_commit();
    let root = dir.path();
    // A history made before it was kept private.
    fs::set_permissions(root.join(HISTORY_DIR), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(ws.dnsd_path(), fs::Permissions::from_mode(0o600)).unwrap();
    let zone = ws.zones_dir().join("a.test.zone");
    fs::set_permissions(&zone, fs::Permissions::from_mode(0o640)).unwrap();
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root {
        std::os::unix::fs::chown(ws.dnsd_path(), Some(4321), Some(4322)).unwrap();
    }
    ws.commit(&changes, "the change", |_| Ok(())).unwrap();
    let toml = fs::metadata(ws.dnsd_path()).unwrap();
    assert_eq!(fs::read_to_string(ws.dnsd_path()).unwrap(), TOML_NEW);
    assert_eq!(toml.mode() & 0o7777, 0o600);
    if as_root {
        assert_eq!((toml.uid(), toml.gid()), (4321, 4322));
    }
    assert_eq!(fs::metadata(&zone).unwrap().mode() & 0o7777, 0o640);
    let history = root.join(HISTORY_DIR);
    assert_eq!(fs::metadata(&history).unwrap().mode() & 0o7777, 0o700);
    // Every generation, file and directory made since is private.
    for path in tree(&history.join("generations/2")).into_iter().chain([
        history.join("generations/2"),
        history.join("current"),
        history.join("lock"),
    ]) {
        let meta = fs::metadata(&path).unwrap();
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(meta.mode() & 0o7777, want, "{}", path.display());
    }
}

#[test]
fn a_linked_zone_file_and_dnsd_toml_are_versioned_and_written_through_their_links() {
    let elsewhere = tempfile::tempdir().unwrap();
    let (_dir, ws, changes) = {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("zones")).unwrap();
        let zone = elsewhere.path().join("a.test.zone");
        let toml = elsewhere.path().join("dnsd.toml");
        fs::write(&zone, ZONE_OLD).unwrap();
        fs::write(&toml, TOML_OLD).unwrap();
        fs::set_permissions(&toml, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&zone, dir.path().join("zones/a.test.zone")).unwrap();
        std::os::unix::fs::symlink(&toml, dir.path().join("dnsd.toml")).unwrap();
        fs::write(dir.path().join("redirector.toml"), RULES).unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        ws.commit(&[], "as found", |_| Ok(())).unwrap();
        let (_, _, changes) = before_the_commit();
        (dir, ws, changes)
    };
    assert_eq!(
        ws.generation_files(1).unwrap()[Path::new("zones/a.test.zone")],
        ZONE_OLD.as_bytes(),
        "a linked zone is versioned by its content"
    );
    ws.commit(&changes, "through the links", |_| Ok(()))
        .unwrap();
    let link = ws.zones_dir().join("a.test.zone");
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(fs::symlink_metadata(ws.dnsd_path()).unwrap().is_symlink());
    assert_eq!(
        fs::read_to_string(elsewhere.path().join("a.test.zone")).unwrap(),
        ZONE_NEW
    );
    let toml = elsewhere.path().join("dnsd.toml");
    assert_eq!(fs::read_to_string(&toml).unwrap(), TOML_NEW);
    assert_eq!(fs::metadata(&toml).unwrap().mode() & 0o7777, 0o600);
    ws.rollback(1, "back").unwrap();
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(fs::read_to_string(&link).unwrap(), ZONE_OLD);
    let names: BTreeSet<String> = fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["a.test.zone".into(), "dnsd.toml".into()])
    );
}
