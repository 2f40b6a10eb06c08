//! Multi-worker distill against a real S3-compatible server (moto_server, on 127.0.0.1):
//! four workers, one killed mid-way and rerun from a fresh scratch folder, then
//! `manifest merge` gives the manifest a single local process gives.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{root, stderr, stdout};

const BUCKET: &str = "lightgen-it";

/// A moto_server on a free loopback port, stopped on drop.
struct S3 {
    child: Child,
    port: u16,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3 {
    fn start() -> S3 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // `python3 -m moto.server` is the moto_server script, found without a PATH rehash
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 not found");
        let mut s3 = S3 { child, port };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = s3.child.try_wait().unwrap() {
                panic!("moto_server exited ({status}): ./scripts/test.sh installs it (pip install 'moto[server]')");
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "moto_server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // buckets are made by the operator, not by lightgen: one plain PUT
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(c, "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "creating the bucket: {answer}");
        s3
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lightgen"));
        c.args(args)
            .current_dir(root())
            .env("AWS_ACCESS_KEY_ID", "it-key")
            .env("AWS_SECRET_ACCESS_KEY", "it-secret-never-printed")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .env("AWS_ALLOW_HTTP", "true")
            // every part file above 4 KiB goes through S3's multipart upload
            .env("LIGHTGEN_MULTIPART_BYTES", "4096");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn config() -> PathBuf {
    root().join("tests/fixtures/distributed.toml")
}

fn worker_args<'a>(store: &'a str, worker: &'a str, scratch: &'a str, cfg: &'a str) -> Vec<&'a str> {
    vec![
        "-q",
        "distill",
        "-c",
        cfg,
        "--store",
        store,
        "--worker",
        worker,
        "--output-dir",
        scratch,
        "--threads",
        "1",
        "--json",
    ]
}

fn id_of(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    let v: serde_json::Value = serde_json::from_str(stdout(out).lines().last().unwrap()).unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn committed_locally(scratch: &Path) -> usize {
    std::fs::read_dir(scratch.join("shapes-distributed/generate"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with("_stats.json")).count())
        .unwrap_or(0)
}

#[test]
fn four_workers_on_s3_one_killed_and_rerun_merge_to_the_single_process_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config();
    let cfg = cfg.to_str().unwrap();
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let s3 = S3::start();
    let store = format!("s3://{BUCKET}/runs/shapes");

    // The reference: one local process, no store.
    let local = s(tmp.path().join("local"));
    let reference = id_of(&s3.run(&["-q", "distill", "-c", cfg, "--output-dir", &local, "--json"]));

    // Four workers at once; worker 1 is killed as soon as its first part is committed.
    let scratch: Vec<String> = (0..4).map(|i| s(tmp.path().join(format!("w{i}")))).collect();
    let mut children: Vec<Child> = (0..4)
        .map(|i| {
            let w = format!("{i}/4");
            s3.command(&worker_args(&store, &w, &scratch[i], cfg))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let t0 = Instant::now();
    while committed_locally(Path::new(&scratch[1])) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(120), "worker 1 committed nothing");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(children[1].try_wait().unwrap().is_none(), "worker 1 must still be running when it is killed");
    children[1].kill().unwrap();
    children[1].wait().unwrap();
    for (i, c) in children.into_iter().enumerate().filter(|(i, _)| *i != 1) {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "worker {i}: {}", stderr(&out));
        assert!(!stdout(&out).contains("it-secret") && !stderr(&out).contains("it-secret"), "no credential is printed");
    }

    // Merge now names exactly the worker to rerun.
    let merged = s(tmp.path().join("merged"));
    let early = s3.run(&["-q", "manifest", "merge", "-c", cfg, "--store", &store, "--output-dir", &merged]);
    assert!(!early.status.success(), "merge with a worker missing must fail");
    let msg = stderr(&early);
    assert!(msg.contains("worker 1/4: parts 4–7") && msg.contains("--worker 1/4"), "{msg}");
    assert!(!msg.contains("worker 0/4") && !msg.contains("worker 2/4") && !msg.contains("worker 3/4"), "{msg}");
    assert!(!std::path::Path::new(&merged).join("shapes-distributed/manifest.json").exists());

    // Rerun worker 1 on a fresh machine (new scratch): the store is all it needs.
    let fresh = s(tmp.path().join("w1-fresh"));
    let out = s3.run(&worker_args(&store, "1/4", &fresh, cfg));
    assert!(out.status.success(), "{}", stderr(&out));
    // Running a finished worker again does nothing.
    let again = s3.run(&worker_args(&store, "0/4", &scratch[0], cfg));
    let v: serde_json::Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!((v["parts_made"].as_u64(), v["parts_published_before"].as_u64()), (Some(0), Some(4)), "{v}");

    let id =
        id_of(&s3.run(&["-q", "manifest", "merge", "-c", cfg, "--store", &store, "--output-dir", &merged, "--json"]));
    assert_eq!(id, reference, "the merged manifest is the single-process one");
    // and the merged run verifies like any local one
    let verify = s3.run(&["manifest", "verify", &format!("{merged}/shapes-distributed/manifest.json")]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn a_store_holding_another_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = s_path(&tmp.path().join("store"));
    let cfg = config();
    let cfg = cfg.to_str().unwrap();
    let out = super::lightgen(&worker_args(&store, "0/2", &s_path(&tmp.path().join("a")), cfg));
    assert!(out.status.success(), "{}", stderr(&out));
    let other = tmp.path().join("other.toml");
    let text = std::fs::read_to_string(cfg).unwrap().replace("seed = 42", "seed = 43");
    std::fs::write(&other, text.replace("../../", &format!("{}/", root().display()))).unwrap();
    let out = super::lightgen(&worker_args(&store, "1/2", &s_path(&tmp.path().join("b")), other.to_str().unwrap()));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("holds a run of another config"), "{}", stderr(&out));
    let out = super::lightgen(&["distill", "-c", cfg, "--store", &store]);
    assert!(stderr(&out).contains("--store needs --worker"), "{}", stderr(&out));
}

fn s_path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}
