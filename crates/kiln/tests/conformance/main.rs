//! Dockerfile conformance: every case under `tests/conformance/dockerfile/` is built with
//! `kiln build` and compared with its `golden.json`, recorded from real BuildKit by
//! `tests/conformance/record.sh` (this test in record mode: `KILN_CONFORMANCE_RECORD=DIR`,
//! the directory holding `buildkitd` and `buildctl`). See `tests/conformance/README.md`.
//!
//! `KILN_CONFORMANCE_CASES=substring` limits the run to matching cases;
//! `KILN_CONFORMANCE_DIR` reads another corpus.

#[path = "../common/mod.rs"]
mod common;
mod tree;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every context file's mtime, so that COPY's preserved times are the same on every machine.
const CONTEXT_MTIME: i64 = 1_577_836_800;

/// A case's `case.toml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    description: String,
    target: Option<String>,
    #[serde(default)]
    build_args: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// Modes to give context paths (git keeps only the executable bit): `{ "dir" = "0700" }`.
    #[serde(default)]
    modes: BTreeMap<String, String>,
    /// How the fixtures were made (documentation only).
    #[allow(dead_code)]
    fixtures: Option<String>,
    /// A deliberate, documented difference from BuildKit: the case is built and its differences
    /// are printed, but they do not fail the test.
    known_difference: Option<String>,
    /// Not yet matching BuildKit (an open item of the conformance issue): differences are
    /// printed; a match fails the test, so the marker is removed when the item is fixed.
    pending: Option<String>,
}

struct Case {
    name: String,
    dir: PathBuf,
    file: CaseFile,
}

/// The corpus: `tests/conformance/dockerfile`, or `KILN_CONFORMANCE_DIR`.
fn corpus() -> PathBuf {
    std::env::var_os("KILN_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/dockerfile")
        })
}

fn cases() -> Vec<Case> {
    let filter = std::env::var("KILN_CONFORMANCE_CASES").unwrap_or_default();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(corpus()).expect("tests/conformance/dockerfile") {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !dir.join("case.toml").is_file() || !name.contains(&filter) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join("case.toml")).unwrap();
        let file: CaseFile =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{name}/case.toml: {e}"));
        out.push(Case { name, dir, file });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A builder under test (kiln) or the reference (BuildKit, when recording).
trait Builder {
    /// Builds the context `ctx` (its Dockerfile inside) as an OCI tarball at `out`; the error
    /// output on failure.
    fn build(&self, ctx: &Path, case: &CaseFile, secrets: &Path, out: &Path) -> Result<(), String>;
}

struct Kiln {
    root: PathBuf,
}

impl Builder for Kiln {
    fn build(&self, ctx: &Path, case: &CaseFile, secrets: &Path, out: &Path) -> Result<(), String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("--root")
            .arg(&self.root)
            .args(["build", "--progress", "plain"]);
        cmd.arg("--output")
            .arg(format!("type=oci,dest={}", out.display()));
        if let Some(t) = &case.target {
            cmd.args(["--target", t]);
        }
        for (k, v) in &case.build_args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        for id in case.secrets.keys() {
            cmd.arg("--secret")
                .arg(format!("id={id},src={}", secrets.join(id).display()));
        }
        run(cmd.arg(ctx))
    }
}

struct BuildKit {
    buildctl: PathBuf,
    daemon: Child,
    addr: String,
}

impl Drop for BuildKit {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

impl BuildKit {
    fn start(bin: &Path, work: &Path, registry: &str) -> BuildKit {
        let config = work.join("buildkitd.toml");
        std::fs::write(
            &config,
            format!("[registry.\"{registry}\"]\n  http = true\n"),
        )
        .unwrap();
        let socket = work.join("buildkitd.sock");
        let addr = format!("unix://{}", socket.display());
        let daemon = Command::new(bin.join("buildkitd"))
            .arg("--root")
            .arg(work.join("buildkitd-root"))
            .args([
                "--addr",
                &addr,
                "--oci-worker=true",
                "--containerd-worker=false",
            ])
            .arg("--config")
            .arg(&config)
            .stderr(Stdio::from(
                std::fs::File::create(work.join("buildkitd.log")).unwrap(),
            ))
            .spawn()
            .expect("buildkitd");
        let buildctl = bin.join("buildctl");
        let t0 = Instant::now();
        while !Command::new(&buildctl)
            .args(["--addr", &addr, "debug", "workers"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "buildkitd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        BuildKit {
            buildctl,
            daemon,
            addr,
        }
    }

    fn version(&self) -> String {
        let out = Command::new(&self.buildctl)
            .arg("--version")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Builder for BuildKit {
    fn build(&self, ctx: &Path, case: &CaseFile, secrets: &Path, out: &Path) -> Result<(), String> {
        let mut cmd = Command::new(&self.buildctl);
        cmd.args(["--addr", &self.addr, "build", "--progress", "plain"]);
        cmd.args(["--frontend", "dockerfile.v0"]);
        cmd.arg("--local").arg(format!("context={}", ctx.display()));
        cmd.arg("--local")
            .arg(format!("dockerfile={}", ctx.display()));
        cmd.arg("--output")
            .arg(format!("type=oci,dest={}", out.display()));
        if let Some(t) = &case.target {
            cmd.arg("--opt").arg(format!("target={t}"));
        }
        for (k, v) in &case.build_args {
            cmd.arg("--opt").arg(format!("build-arg:{k}={v}"));
        }
        for id in case.secrets.keys() {
            cmd.arg("--secret")
                .arg(format!("id={id},src={}", secrets.join(id).display()));
        }
        run(&mut cmd)
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.stdout(Stdio::null()).output().expect("spawn a builder");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// BuildKit's error line without buildctl's prefixes: `error: failed to solve: X` → `X`.
fn error_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error:") || l.starts_with("ERROR:"))
        .unwrap_or_else(|| stderr.lines().last().unwrap_or_default());
    let mut msg = line.trim();
    for prefix in ["error:", "ERROR:", " failed to solve:", "failed to solve:"] {
        msg = msg.strip_prefix(prefix).unwrap_or(msg).trim_start();
    }
    without_ref_ids(msg)
}

/// BuildKit names cache refs by random ids (`checksum of ref ab12::cd34: "/x": not found`):
/// `checksum of ref: "/x": not found`, as kiln words it.
fn without_ref_ids(msg: &str) -> String {
    let Some(at) = msg.find(" of ref ") else {
        return msg.to_string();
    };
    let rest = &msg[at + " of ref ".len()..];
    match rest.find(": ") {
        Some(end) if rest[..end].contains("::") => {
            format!("{} of ref{}", &msg[..at], &rest[end..])
        }
        _ => msg.to_string(),
    }
}

/// Copies `from` into `to` as a context: `{{base}}` in the Dockerfile replaced, `modes`
/// applied, every mtime set to [`CONTEXT_MTIME`] (symlinks included, directories last).
fn prepare(case: &Case, base: &str, to: &Path) {
    copy_tree(&case.dir, to, true);
    let df = to.join("Dockerfile");
    let text = std::fs::read_to_string(&df).unwrap();
    std::fs::write(&df, text.replace("{{base}}", base)).unwrap();
    for (path, mode) in &case.file.modes {
        use std::os::unix::fs::PermissionsExt;
        let mode = u32::from_str_radix(mode, 8)
            .unwrap_or_else(|e| panic!("{}: mode {mode}: {e}", case.name));
        std::fs::set_permissions(to.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    set_mtimes(to);
}

fn copy_tree(from: &Path, to: &Path, top: bool) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if top && (name == "case.toml" || name == "golden.json") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let meta = std::fs::symlink_metadata(&src).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if meta.is_dir() {
            copy_tree(&src, &dst, false);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn set_mtimes(path: &Path) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            set_mtimes(&entry.unwrap().path());
        }
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: CONTEXT_MTIME,
        tv_nsec: 0,
    };
    // SAFETY: a valid C string and two valid timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What a builder makes of a case: the golden's shape, plus the whole error output. File
/// times at or after `since` (the start of the run: cases share the cache, so a step may have
/// run for an earlier case) are the build's.
fn observe(
    builder: &dyn Builder,
    case: &Case,
    base_ref: &str,
    base: Option<&tree::Image>,
    work: &Path,
    since: i64,
) -> (Value, String) {
    let ctx = work.join(format!("ctx-{}", case.name));
    let _ = std::fs::remove_dir_all(&ctx);
    prepare(case, base_ref, &ctx);
    let secrets = work.join(format!("secrets-{}", case.name));
    std::fs::create_dir_all(&secrets).unwrap();
    for (id, value) in &case.file.secrets {
        std::fs::write(secrets.join(id), value).unwrap();
    }
    let out = work.join(format!("{}.tar", case.name));
    match builder.build(&ctx, &case.file, &secrets, &out) {
        Err(stderr) => (json!({ "error": error_line(&stderr) }), stderr),
        Ok(()) => {
            let images =
                tree::read_oci(&out, since).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let _ = std::fs::remove_file(&out);
            let mut shown: Vec<Value> =
                images.iter().map(|i| tree::against_base(i, base)).collect();
            let v = if shown.len() == 1 {
                json!({ "image": shown.remove(0) })
            } else {
                json!({ "images": shown })
            };
            (v, String::new())
        }
    }
}

/// The base image's tree, as this builder makes `FROM {{base}}`.
fn base_tree(builder: &dyn Builder, base_ref: &str, work: &Path, since: i64) -> tree::Image {
    let dir = work.join("base-case");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM {{base}}\n").unwrap();
    let case = Case {
        name: "000-base".into(),
        dir,
        file: CaseFile::default(),
    };
    let ctx = work.join("ctx-base");
    prepare(&case, base_ref, &ctx);
    let out = work.join("base.tar");
    builder
        .build(&ctx, &case.file, work, &out)
        .unwrap_or_else(|e| panic!("building the base image: {e}"));
    tree::read_oci(&out, since).unwrap().remove(0)
}

#[test]
fn dockerfile_cases_match_buildkit_goldens() {
    let test = "dockerfile_cases_match_buildkit_goldens";
    let since = now();
    let Some(env) = common::setup(test) else {
        return;
    };
    let cases = cases();
    let work = env.work.path();
    if let Some(bin) = std::env::var_os("KILN_CONFORMANCE_RECORD") {
        record(Path::new(&bin), &env, &cases, since);
        return;
    }
    let kiln = Kiln {
        root: env.root.path().to_path_buf(),
    };
    let base = base_tree(&kiln, &env.base, work, since);
    let (mut ok, mut known, mut pending, mut failed) = (0, 0, 0, Vec::new());
    let t0 = Instant::now();
    for case in &cases {
        let golden_path = case.dir.join("golden.json");
        let Ok(text) = std::fs::read_to_string(&golden_path) else {
            println!(
                "FAIL    {}: no golden.json (record with tests/conformance/record.sh)",
                case.name
            );
            failed.push(case.name.clone());
            continue;
        };
        let want: Value = serde_json::from_str(&text).unwrap();
        let (got, stderr) = observe(&kiln, case, &env.base, Some(&base), work, since);
        let diffs = match want.get("error").and_then(Value::as_str) {
            Some(msg) if got.get("error").is_some() => {
                if stderr.contains(msg) {
                    Vec::new()
                } else {
                    vec![format!(
                        "error: BuildKit {msg:?}, kiln {:?}",
                        error_line(&stderr)
                    )]
                }
            }
            _ => {
                let mut d = tree::differences(&want, &got);
                if got.get("error").is_some() {
                    d = vec![format!("kiln failed: {}", error_line(&stderr))];
                }
                d
            }
        };
        let f = &case.file;
        match (diffs.is_empty(), &f.known_difference, &f.pending) {
            (true, _, Some(why)) => {
                println!(
                    "FAIL    {}: matches BuildKit now; remove `pending` ({why})",
                    case.name
                );
                failed.push(case.name.clone());
            }
            (true, _, None) => {
                println!("ok      {}", case.name);
                ok += 1;
            }
            (false, Some(why), _) => {
                println!("KNOWN   {}: {why}", case.name);
                known += 1;
            }
            (false, None, Some(why)) => {
                println!("PENDING {}: {why}", case.name);
                for d in diffs.iter().take(6) {
                    println!("          {d}");
                }
                pending += 1;
            }
            (false, None, None) => {
                println!("FAIL    {}: {}", case.name, f.description);
                for d in diffs.iter().take(12) {
                    println!("          {d}");
                }
                failed.push(case.name.clone());
            }
        }
    }
    println!(
        "conformance: {} cases in {:.0} s: {ok} match BuildKit, {known} known differences, \
         {pending} pending, {} failed",
        cases.len(),
        t0.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "cases differing from BuildKit: {failed:?}"
    );
}

/// Record mode: every case built with real BuildKit, its golden written next to it.
fn record(bin: &Path, env: &common::Env, cases: &[Case], since: i64) {
    let work = env.work.path();
    let bk = BuildKit::start(bin, work, &env.registry.host());
    let base = base_tree(&bk, &env.base, work, since);
    for case in cases {
        let (golden, stderr) = observe(&bk, case, &env.base, Some(&base), work, since);
        let text = serde_json::to_string_pretty(&golden).unwrap() + "\n";
        std::fs::write(case.dir.join("golden.json"), text).unwrap();
        match golden.get("error") {
            Some(e) => println!("recorded {} (fails: {e})", case.name),
            None => println!("recorded {}", case.name),
        }
        if !stderr.is_empty() && std::env::var_os("KILN_CONFORMANCE_VERBOSE").is_some() {
            println!("{stderr}");
        }
    }
    let stamp = format!(
        "Goldens recorded with {} (buildkitd and buildctl built from source, OCI worker, runc) on {}.\n",
        bk.version(),
        String::from_utf8_lossy(&Command::new("date").arg("-u").arg("+%Y-%m-%d").output().unwrap().stdout).trim()
    );
    std::fs::write(corpus().join("RECORDED"), stamp).unwrap();
}
