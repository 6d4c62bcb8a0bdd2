//! Exec ops (`RUN`): mount the root chain with a fresh upper dir, prepare the extra mounts,
//! run the process under runc; the upper dir becomes the new layer.

use crate::executor::{ExecMount, ExecMountKind, Network, ProcessSpec};
use crate::fsutil::{clean_abs, resolve_in_root};
use crate::llb::Vertex;
use crate::snapshot::{Chain, LayerId, MountGuard, PendingLayer, RwMount};
use crate::solver::{SolveCtx, SolveError, VertexResult};
use bollard_buildkit_proto::pb;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Mount points whose stubs are removed after a RUN, besides the step's own mounts: BuildKit's
/// `MountStubsCleaner` list. The directories runc makes for `/proc`, `/dev` and `/sys` when an
/// image lacks them stay in the layer, as in BuildKit.
const DEFAULT_MOUNT_POINTS: &[&str] = &["/etc/resolv.conf", "/etc/hosts"];
/// Things that must stay alive while the process runs; only their `Drop` matters.
#[allow(dead_code)]
enum Held {
    Mount(MountGuard),
    Rw(RwMount),
    Pending(PendingLayer),
    Tmpfs(TmpfsDir),
    CacheLock(tokio::sync::OwnedMutexGuard<()>),
    /// Serves an SSH agent socket; stopped on drop.
    Task(AbortOnDrop),
}

/// A background task that ends with the step.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serve `socket` for a step: every connection the step makes is forwarded to the client's SSH
/// agent `id` through the session. The socket gets the mount's owner and mode.
fn ssh_forward(
    session: std::sync::Arc<dyn crate::session::Session>,
    id: String,
    socket: &Path,
    opt: &pb::SshOpt,
) -> Result<AbortOnDrop, SolveError> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .map_err(SolveError::io("creating the SSH agent socket"))?;
    listener
        .set_nonblocking(true)
        .map_err(SolveError::io("creating the SSH agent socket"))?;
    let mode = if opt.mode == 0 {
        0o600
    } else {
        opt.mode & 0o777
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .map_err(SolveError::io("setting the SSH agent socket's mode"))?;
    std::os::unix::fs::chown(socket, Some(opt.uid), Some(opt.gid))
        .map_err(SolveError::io("setting the SSH agent socket's owner"))?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(SolveError::io("creating the SSH agent socket"))?;
    Ok(AbortOnDrop(tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut local, _)) = listener.accept().await {
            let (session, id) = (session.clone(), id.clone());
            connections.spawn(async move {
                match session.ssh_agent(&id).await {
                    Ok(mut agent) => {
                        let _ = tokio::io::copy_bidirectional(&mut local, &mut agent).await;
                    }
                    Err(e) => tracing::warn!("RUN --mount=type=ssh: {e}"),
                }
            });
        }
    })))
}

/// A tmpfs directory holding secrets; unmounted and removed on drop.
struct TmpfsDir(PathBuf);

impl Drop for TmpfsDir {
    fn drop(&mut self) {
        let _ = crate::sys::unmount(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn solve(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    exec: &pb::ExecOp,
    inputs: &[Arc<VertexResult>],
) -> Result<VertexResult, SolveError> {
    let parts: Vec<String> = vertex
        .op
        .inputs
        .iter()
        .zip(inputs)
        .map(|(i, r)| SolveCtx::input_part(i, r))
        .collect();
    let key = ctx.key(vertex, &parts);
    let n_outputs = exec
        .mounts
        .iter()
        .map(|m| m.output + 1)
        .max()
        .unwrap_or(0)
        .max(0) as usize;
    if let Some(cached) = ctx.cached(vertex, &key)? {
        return Ok(cached);
    }
    // Another solve may be building the same step right now: wait for it, then use its result.
    let _building = ctx.engine.building(&key).await;
    if let Some(cached) = ctx.cached(vertex, &key)? {
        return Ok(cached);
    }
    if let Some(imported) = ctx.imported(vertex, &key).await? {
        return Ok(imported);
    }
    if let Some(p) = &vertex.op.platform {
        let host = kiln_oci::Platform::host();
        if !p.architecture.is_empty()
            && p.architecture != host.architecture
            && !crate::executor::emulator_registered(&p.architecture)
        {
            return Err(SolveError::msg(format!(
                "RUN for platform {}/{} cannot run on this {host} host: no emulator for {} is \
                 registered with binfmt_misc (install qemu-user-static on the host, or \
                 cross-compile in a stage FROM --platform=$BUILDPLATFORM)",
                p.os, p.architecture, p.architecture
            )));
        }
    }
    // The step reads its inputs' files: unpack their lazy layers (without an exec slot).
    super::materialize_inputs(ctx, vertex, inputs).await?;
    let _slot = ctx.engine.exec_slot().await?;

    let meta = exec
        .meta
        .clone()
        .ok_or_else(|| SolveError::msg("exec op without meta"))?;
    if meta.args.is_empty() {
        return Err(SolveError::msg("exec op without arguments"));
    }
    let chain_of = |input: i64| -> Result<Chain, SolveError> {
        if input < 0 {
            return Ok(Chain::scratch());
        }
        let idx = usize::try_from(input).map_err(|_| SolveError::msg("bad mount input"))?;
        let r = inputs
            .get(idx)
            .ok_or_else(|| SolveError::msg(format!("mount input {input} out of range")))?;
        let out = vertex.op.inputs[idx].index;
        Ok(r.output(out)?.clone())
    };

    let root_mount = exec
        .mounts
        .iter()
        .find(|m| m.dest == "/")
        .ok_or_else(|| SolveError::msg("exec op has no root mount"))?;
    let root_chain = chain_of(root_mount.input)?;
    let (root_layer, root_guard) = ctx
        .engine
        .layers
        .begin_on(&root_chain)
        .map_err(|e| SolveError::msg(format!("mounting root filesystem: {e}")))?;
    let rootfs = root_guard.path().to_path_buf();

    // Paths runc will have to create as mount points; removed again afterwards so they don't
    // end up in the layer.
    let mut stubs = Vec::new();
    let mut mount_points: Vec<String> =
        DEFAULT_MOUNT_POINTS.iter().map(|s| s.to_string()).collect();
    mount_points.extend(
        exec.mounts
            .iter()
            .filter(|m| m.dest != "/")
            .map(|m| clean_abs(&m.dest)),
    );
    for mp in &mount_points {
        if let Some(stub) = first_missing(&rootfs, mp) {
            stubs.push(stub);
        }
    }
    let cwd = if meta.cwd.is_empty() {
        "/".to_string()
    } else {
        meta.cwd.clone()
    };
    if let Ok(p) = resolve_in_root(&rootfs, &cwd, true) {
        let _ = std::fs::create_dir_all(p);
    }

    let bundle = ctx
        .engine
        .layers
        .scratch_dir()
        .map_err(SolveError::io("preparing bundle"))?;
    let mut held: Vec<Held> = Vec::new();
    let mut mounts = Vec::new();
    let mut env = meta.env.clone();
    if let Some(p) = &meta.proxy_env {
        env.extend(proxy_env_list(p));
    }
    let mut output_layers: Vec<(i64, Chain, PendingLayer, RwMount)> = Vec::new();
    let mut secrets_dir: Option<PathBuf> = None;

    for m in &exec.mounts {
        if m.dest == "/" {
            continue;
        }
        let dest = clean_abs(&m.dest);
        match pb::MountType::try_from(m.mount_type).unwrap_or(pb::MountType::Bind) {
            pb::MountType::Bind => {
                let chain = chain_of(m.input)?;
                if m.readonly || m.output < 0 {
                    if m.readonly {
                        let g = ctx
                            .engine
                            .layers
                            .mount_ro(&chain)
                            .map_err(|e| SolveError::msg(format!("mounting {dest}: {e}")))?;
                        let src = selector_path(g.path(), &m.selector)?;
                        mounts.push(ExecMount {
                            dest,
                            kind: ExecMountKind::Bind(src),
                            readonly: true,
                        });
                        held.push(Held::Mount(g));
                        continue;
                    }
                    // Writable, but changes are thrown away.
                    let (p, g) = ctx
                        .engine
                        .layers
                        .begin_on(&chain)
                        .map_err(|e| SolveError::msg(format!("mounting {dest}: {e}")))?;
                    let src = selector_path(g.path(), &m.selector)?;
                    mounts.push(ExecMount {
                        dest,
                        kind: ExecMountKind::Bind(src),
                        readonly: false,
                    });
                    held.push(Held::Rw(g));
                    held.push(Held::Pending(p));
                } else {
                    let (p, g) = ctx
                        .engine
                        .layers
                        .begin_on(&chain)
                        .map_err(|e| SolveError::msg(format!("mounting {dest}: {e}")))?;
                    mounts.push(ExecMount {
                        dest,
                        kind: ExecMountKind::Bind(g.path().to_path_buf()),
                        readonly: false,
                    });
                    output_layers.push((m.output, chain, p, g));
                }
            }
            pb::MountType::Cache => {
                let opt = m.cache_opt.clone().unwrap_or_default();
                let id = if opt.id.is_empty() {
                    dest.clone()
                } else {
                    opt.id.clone()
                };
                let dir = ctx
                    .engine
                    .root
                    .join("cache-mounts")
                    .join(hex::encode(&Sha256::digest(id.as_bytes())[..12]));
                let fresh = !dir.exists();
                std::fs::create_dir_all(&dir).map_err(SolveError::io("creating cache mount"))?;
                if fresh && m.input >= 0 {
                    let base = chain_of(m.input)?;
                    ctx.engine
                        .layers
                        .seed_from(&base, &m.selector, &dir)
                        .map_err(SolveError::io("seeding cache mount"))?;
                }
                if pb::CacheSharingOpt::try_from(opt.sharing) == Ok(pb::CacheSharingOpt::Locked) {
                    let lock = ctx.engine.cache_mount_lock(&id);
                    held.push(Held::CacheLock(lock.lock_owned().await));
                }
                mounts.push(ExecMount {
                    dest,
                    kind: ExecMountKind::Bind(dir),
                    readonly: m.readonly,
                });
            }
            pb::MountType::Tmpfs => {
                let size = m
                    .tmpfs_opt
                    .map(|t| t.size)
                    .filter(|s| *s > 0)
                    .map(|s| s as u64);
                mounts.push(ExecMount {
                    dest,
                    kind: ExecMountKind::Tmpfs { size },
                    readonly: false,
                });
            }
            pb::MountType::Secret => {
                let opt = m.secret_opt.clone().unwrap_or_default();
                let value = match ctx.session.secret(&opt.id).await {
                    Ok(v) => v,
                    Err(_) if opt.optional => continue,
                    Err(crate::session::SessionError::NoSuchSecret(_)) => {
                        return Err(SolveError::msg(format!("secret {}: not found", opt.id)))
                    }
                    Err(e) => return Err(SolveError::msg(format!("secret {}: {e}", opt.id))),
                };
                let dir = ensure_secrets_dir(&bundle, &mut secrets_dir, &mut held)?;
                let file = dir.join(hex::encode(&Sha256::digest(dest.as_bytes())[..8]));
                write_secret(&file, &value, opt.mode, opt.uid, opt.gid)?;
                mounts.push(ExecMount {
                    dest,
                    kind: ExecMountKind::Bind(file),
                    readonly: true,
                });
            }
            pb::MountType::Ssh => {
                let opt = m.ssh_opt.clone().unwrap_or_default();
                let id = if opt.id.is_empty() {
                    "default".to_string()
                } else {
                    opt.id.clone()
                };
                if !ctx.session.has_ssh_agent(&id).await {
                    if opt.optional {
                        continue;
                    }
                    return Err(SolveError::msg(
                        crate::session::SessionError::NoSuchSshAgent(id).to_string(),
                    ));
                }
                let socket = bundle.join(format!("ssh-{}.sock", mounts.len()));
                let forward = ssh_forward(ctx.session.clone(), id, &socket, &opt)?;
                held.push(Held::Task(forward));
                mounts.push(ExecMount {
                    dest,
                    kind: ExecMountKind::Bind(socket),
                    readonly: false,
                });
            }
        }
    }
    for se in &exec.secretenv {
        match ctx.session.secret(&se.id).await {
            Ok(v) => env.push(format!("{}={}", se.name, String::from_utf8_lossy(&v))),
            Err(_) if se.optional => {}
            Err(e) => return Err(SolveError::msg(format!("secret {}: {e}", se.id))),
        }
    }

    let network = match pb::NetMode::try_from(exec.network).unwrap_or(pb::NetMode::Unset) {
        pb::NetMode::None => Network::None,
        _ => Network::Host,
    };
    let spec = ProcessSpec {
        args: meta.args.clone(),
        env,
        cwd,
        user: meta.user.clone(),
        hostname: if meta.hostname.is_empty() {
            "buildkitsandbox".into()
        } else {
            meta.hostname.clone()
        },
        network,
        mounts,
        extra_hosts: meta
            .extra_hosts
            .iter()
            .map(|h| (h.host.clone(), h.ip.clone()))
            .collect(),
    };
    let container_id = format!("kiln-{}", &key[7..23]);
    let run = ctx
        .engine
        .runc
        .run(
            &format!("{container_id}-{}-{}", std::process::id(), next_run()),
            &rootfs,
            &bundle,
            &spec,
            crate::executor::ProcessIo {
                progress: &ctx.progress,
                vertex: &vertex.digest,
                cancel: &ctx.cancel,
            },
        )
        .await;
    drop(held);
    let finished = root_guard
        .finish()
        .map_err(SolveError::io("collecting changes"));
    let _ = std::fs::remove_dir_all(&bundle);
    finished?;
    if let Err(e) = run {
        return Err(match e {
            crate::executor::ExecError::Canceled => SolveError::canceled(),
            e => SolveError::msg(e.to_string()),
        });
    }
    let diff = root_layer.diff();
    for stub in &stubs {
        remove_stub(&diff, stub);
    }
    ctx.engine.layers.keep_lower_dir_times(&root_chain, &diff);

    let mut outputs = vec![Chain::scratch(); n_outputs];
    let root_id = LayerId::derive(&format!("{key}/{}", root_mount.output));
    ctx.engine
        .layers
        .commit(root_layer, &root_id)
        .map_err(SolveError::io("committing layer"))?;
    if root_mount.output >= 0 {
        outputs[root_mount.output as usize] = root_chain.with(root_id);
    }
    for (out, chain, pending, mount) in output_layers {
        mount
            .finish()
            .map_err(SolveError::io("collecting changes"))?;
        let id = LayerId::derive(&format!("{key}/{out}"));
        ctx.engine
            .layers
            .commit(pending, &id)
            .map_err(SolveError::io("committing layer"))?;
        outputs[out as usize] = chain.with(id);
    }
    ctx.record(vertex, &key, &outputs)?;
    Ok(VertexResult {
        key,
        outputs,
        local: None,
    })
}

fn selector_path(root: &Path, selector: &str) -> Result<PathBuf, SolveError> {
    if selector.is_empty() || selector == "/" {
        return Ok(root.to_path_buf());
    }
    let p =
        resolve_in_root(root, selector, true).map_err(SolveError::io("resolving mount source"))?;
    if !p.exists() {
        return Err(SolveError::msg(format!(
            "mount source {selector:?}: not found"
        )));
    }
    Ok(p)
}

fn ensure_secrets_dir(
    bundle: &Path,
    current: &mut Option<PathBuf>,
    held: &mut Vec<Held>,
) -> Result<PathBuf, SolveError> {
    if let Some(d) = current {
        return Ok(d.clone());
    }
    let dir = bundle.join("secrets");
    std::fs::create_dir_all(&dir).map_err(SolveError::io("creating secrets dir"))?;
    crate::sys::mount_tmpfs(&dir, "mode=0700,size=16m")
        .map_err(|e| SolveError::msg(format!("mounting tmpfs for secrets: {e}")))?;
    held.push(Held::Tmpfs(TmpfsDir(dir.clone())));
    *current = Some(dir.clone());
    Ok(dir)
}

fn write_secret(
    file: &Path,
    value: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), SolveError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(file, value).map_err(SolveError::io("writing secret"))?;
    let mode = if mode == 0 { 0o400 } else { mode & 0o777 };
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
        .map_err(SolveError::io("writing secret"))?;
    if crate::sys::euid() == 0 {
        let _ = std::os::unix::fs::chown(file, Some(uid), Some(gid));
    }
    Ok(())
}

/// The first component of `path` that does not exist under `rootfs` (as an in-image path).
fn first_missing(rootfs: &Path, path: &str) -> Option<String> {
    let mut cur = String::new();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        cur.push('/');
        cur.push_str(comp);
        let host = resolve_in_root(rootfs, &cur, false).ok()?;
        if std::fs::symlink_metadata(&host).is_err() {
            return Some(cur);
        }
    }
    None
}

/// Remove a mount-point stub from the upper dir if it is still empty (a file of size 0 or a
/// tree of empty directories): the process didn't put anything there.
fn remove_stub(upper: &Path, stub: &str) {
    let p = upper.join(stub.trim_start_matches('/'));
    let Ok(meta) = std::fs::symlink_metadata(&p) else {
        return;
    };
    if meta.is_file() && meta.len() == 0 {
        let _ = std::fs::remove_file(&p);
    } else if meta.is_dir() && only_empty_dirs(&p) {
        let _ = std::fs::remove_dir_all(&p);
    }
}

fn only_empty_dirs(p: &Path) -> bool {
    walkdir::WalkDir::new(p).into_iter().all(|e| {
        e.map(|e| {
            e.file_type().is_dir()
                || (e.file_type().is_file() && e.metadata().map(|m| m.len() == 0).unwrap_or(false))
        })
        .unwrap_or(false)
    })
}

/// The predefined proxy build args in both spellings, as BuildKit's `proxyEnvList`: they reach
/// the step's environment without an `ARG` and stay out of the image.
fn proxy_env_list(p: &pb::ProxyEnv) -> Vec<String> {
    [
        ("HTTP_PROXY", "http_proxy", &p.http_proxy),
        ("HTTPS_PROXY", "https_proxy", &p.https_proxy),
        ("FTP_PROXY", "ftp_proxy", &p.ftp_proxy),
        ("NO_PROXY", "no_proxy", &p.no_proxy),
        ("ALL_PROXY", "all_proxy", &p.all_proxy),
    ]
    .into_iter()
    .filter(|(_, _, v)| !v.is_empty())
    .flat_map(|(upper, lower, v)| [format!("{upper}={v}"), format!("{lower}={v}")])
    .collect()
}

/// A number unique to each RUN of this process, so concurrent runs never share a runc id.
fn next_run() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
