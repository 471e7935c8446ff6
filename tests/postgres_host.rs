//! A real PostgreSQL 15 server on the ext4 of an `ebsim mount` of an encrypted
//! volume, through src/host/postgres.rs (what RDS instances will run): rows
//! written by a real client survive a clean stop, an unmount and a remount; the
//! image holds none of them, nor the master password; the server log is on the
//! volume; a crash stop loses no committed row. Needs root, /dev/fuse, losetup,
//! mkfs.ext4, PostgreSQL 15 and psql (scripts/test.sh installs them).

mod common;

use common::postgres::{free_port, skipped};
use common::sandbox::Sandbox;
use ebsim::host::postgres::{Postgres, StopMode, server_binaries};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const MASTER: &str = "dbadmin";
const PASSWORD: &str = "ebsim-master-pw-7c1d";

/// psql over loopback TCP as the master user; its stdout, or the failure.
fn psql(pg: &Postgres, password: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            MASTER,
        ])
        .args(["-d", "postgres", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn postgres_on_an_encrypted_mount_keeps_its_rows_and_the_image_holds_none() {
    if skipped() {
        return;
    }
    let s = Sandbox::new();
    let vol = s.volume(true, 256 << 20);
    let fs = s.path("fs");
    let fs_s = fs.display().to_string();
    s.ok(&["mount", &vol, &fs_s, "--mkfs", "ext4"]);

    let bin = server_binaries().unwrap();
    let pg = Postgres::new(
        &bin,
        &fs.join("pgdata"),
        &s.dir.path().join("sock"),
        free_port(),
    );
    pg.init(MASTER, PASSWORD).unwrap();
    assert!(!pg.is_running().unwrap());
    // The password file initdb read is gone.
    assert!(!fs.join("pgdata.pwfile").exists());
    pg.start().unwrap();
    assert!(pg.is_running().unwrap());

    // A real client, the master user's password: rows in, a checkpoint.
    psql(
        &pg,
        PASSWORD,
        "create table plans(id int primary key, body text); \
         insert into plans select g, 'ebsim-row-marker: attack at dawn ' || g from generate_series(1, 5000) g; \
         checkpoint;",
    )
    .unwrap();
    assert_eq!(
        psql(&pg, PASSWORD, "select count(*) from plans").unwrap(),
        "5000"
    );
    // Every connection needs the password.
    let refused = psql(&pg, "not-the-password", "select 1").unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );

    // A crash (immediate stop): a committed row survives the WAL replay.
    psql(
        &pg,
        PASSWORD,
        "insert into plans values (5001, 'ebsim-row-marker: after the checkpoint')",
    )
    .unwrap();
    pg.stop(StopMode::Immediate).unwrap();
    pg.start().unwrap();
    assert_eq!(
        psql(&pg, PASSWORD, "select count(*) from plans").unwrap(),
        "5001"
    );

    // The server's log is on the volume.
    let logs = std::fs::read_dir(pg.log_dir()).unwrap().count();
    assert!(logs >= 2, "no server log in {}", pg.log_dir().display());

    // A clean stop, unmount: the image holds neither the rows nor the password.
    pg.stop(StopMode::Fast).unwrap();
    assert!(!pg.is_running().unwrap());
    s.ok(&["unmount", &fs_s]);
    let raw = std::fs::read(s.image(&vol)).unwrap();
    for needle in [&b"ebsim-row-marker"[..], PASSWORD.as_bytes()] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "{} is in the image in the clear",
            String::from_utf8_lossy(needle)
        );
    }

    // Mounted again, the same cluster starts with every row.
    s.ok(&["mount", &vol, &fs_s]);
    pg.start().unwrap();
    assert_eq!(
        psql(&pg, PASSWORD, "select body from plans where id = 5001").unwrap(),
        "ebsim-row-marker: after the checkpoint"
    );
    assert_eq!(
        psql(&pg, PASSWORD, "select count(*) from plans").unwrap(),
        "5001"
    );
    pg.stop(StopMode::Fast).unwrap();
    s.ok(&["unmount", &fs_s]);
    s.assert_no_leftovers();
}

#[test]
fn a_cluster_is_made_only_in_an_empty_reachable_directory() {
    if skipped() {
        return;
    }
    let s = Sandbox::new();
    let bin = server_binaries().unwrap();
    // A directory only root may pass: PostgreSQL's user could not reach a
    // cluster in it, and nothing is made there.
    let closed = s.path("closed");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pg = Postgres::new(
        &bin,
        &closed.join("data"),
        &s.dir.path().join("sock"),
        free_port(),
    );
    let e = pg.init(MASTER, PASSWORD).unwrap_err();
    assert!(e.to_string().contains("cannot reach"), "{e}");
    assert!(e.to_string().contains(&closed.display().to_string()), "{e}");
    assert!(!closed.join("data").exists());

    let data = s.path("data");
    std::fs::write(data.join("something"), b"not a cluster").unwrap();
    let pg = Postgres::new(&bin, &data, &s.dir.path().join("sock"), free_port());
    let e = pg.init(MASTER, PASSWORD).unwrap_err();
    assert!(e.to_string().contains("is not empty"), "{e}");
    assert!(e.to_string().contains(&data.display().to_string()), "{e}");
    // Nothing was changed in it.
    assert_eq!(
        std::fs::read(data.join("something")).unwrap(),
        b"not a cluster"
    );
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);
}
