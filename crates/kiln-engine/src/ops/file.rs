//! File ops (`COPY`, `ADD`, `WORKDIR`, heredocs): copy, mkdir, mkfile, rm and symlink actions,
//! done by the engine itself on the mounted destination — no container needed. Every path is
//! resolved inside its root, so nothing a build says can reach outside it.

use super::chmod::ModeSpec;
use super::owner::{apply_owner, owner, Owner};
use crate::fsutil::{clean_abs, resolve_in_root};
use crate::glob;
use crate::llb::Vertex;
use crate::snapshot::Snapshotter;
use crate::snapshot::{Chain, LayerId};
use crate::solver::{SolveCtx, SolveError, VertexResult};
use bollard_buildkit_proto::pb;
use bollard_buildkit_proto::pb::file_action::Action;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn solve(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    file: &pb::FileOp,
    inputs: &[Arc<VertexResult>],
) -> Result<VertexResult, SolveError> {
    let key = key(ctx, vertex, file, inputs)?;
    let n_outputs = file
        .actions
        .iter()
        .map(|a| a.output + 1)
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
    // The step reads its inputs' files: unpack their lazy layers (without an exec slot).
    super::materialize_inputs(ctx, vertex, inputs).await?;
    let _slot = ctx.engine.exec_slot().await?;

    let n_inputs = inputs.len() as i64;
    let mut results: Vec<Chain> = Vec::new();
    let mut outputs = vec![Chain::scratch(); n_outputs];
    for group in action_groups(file, n_inputs) {
        let first = group[0];
        let chain_of = |idx: i64| -> Result<Chain, SolveError> {
            if idx < 0 {
                Ok(Chain::scratch())
            } else if idx < n_inputs {
                let r = &inputs[idx as usize];
                r.output(vertex.op.inputs[idx as usize].index).cloned()
            } else {
                results
                    .get((idx - n_inputs) as usize)
                    .cloned()
                    .ok_or_else(|| SolveError::msg(format!("file action {first}: bad input {idx}")))
            }
        };
        let base = chain_of(file.actions[first].input)?;
        let secondaries = group
            .iter()
            .map(|&i| {
                let idx = file.actions[i].secondary_input;
                (idx >= 0).then(|| chain_of(idx)).transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (pending, guard) = ctx
            .engine
            .layers
            .begin_on(&base)
            .map_err(|e| SolveError::msg(format!("mounting filesystem: {e}")))?;
        let dest_root = guard.path().to_path_buf();
        for (&i, secondary) in group.iter().zip(secondaries) {
            let src_guard = match &secondary {
                Some(chain) => Some(
                    ctx.engine
                        .layers
                        .mount_ro(chain)
                        .map_err(|e| SolveError::msg(format!("mounting copy source: {e}")))?,
                ),
                None => None,
            };
            let src_root = src_guard.as_ref().map(|g| g.path().to_path_buf());
            // Files hard-linked into the upper directory behind the mount's back are safe only
            // while one action writes the mount: several actions may write one path twice.
            let linker = match (&secondary, &src_root) {
                (Some(chain), Some(src_mount))
                    if ctx.engine.layers.snapshotter() == Snapshotter::Overlay
                        && group.len() == 1 =>
                {
                    Some(Linker {
                        src_mount: src_mount.clone(),
                        src_layers: chain
                            .layers()
                            .iter()
                            .rev()
                            .map(|id| ctx.engine.layers.dir(id))
                            .collect(),
                        dest_mount: dest_root.clone(),
                        upper: pending.diff(),
                        parents: HashMap::new(),
                    })
                }
                _ => None,
            };
            let action = file.actions[i].clone();
            let dest = dest_root.clone();
            tokio::task::spawn_blocking(move || {
                run_action(&dest, src_root.as_deref(), linker, &action)
            })
            .await
            .map_err(|e| SolveError::msg(format!("file action: {e}")))??;
            drop(src_guard);
        }
        guard
            .finish()
            .map_err(SolveError::io("collecting changes"))?;
        ctx.engine
            .layers
            .keep_lower_dir_times(&base, &pending.diff());
        let last = *group.last().expect("groups are not empty");
        let id = LayerId::derive(&format!("{key}/action{last}"));
        ctx.engine
            .layers
            .commit(pending, &id)
            .map_err(SolveError::io("committing layer"))?;
        let chain = base.with(id);
        for &i in &group {
            if file.actions[i].output >= 0 {
                outputs[file.actions[i].output as usize] = chain.clone();
            }
            results.push(chain.clone());
        }
    }
    ctx.record(vertex, &key, &outputs)?;
    Ok(VertexResult {
        key,
        outputs,
        local: None,
    })
}

/// The actions in runs that make one layer, as BuildKit applies a FileOp's chained actions to
/// one mutable snapshot (`COPY a* b* /d/` is one layer): an action joins the run before it
/// when it starts from that run's last result and nothing else reads that result.
fn action_groups(file: &pb::FileOp, n_inputs: i64) -> Vec<Vec<usize>> {
    let reads = |idx: i64| {
        file.actions
            .iter()
            .filter(|a| a.input == idx || a.secondary_input == idx)
            .count()
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, action) in file.actions.iter().enumerate() {
        let prev = n_inputs + i as i64 - 1;
        let chained =
            i > 0 && action.input == prev && file.actions[i - 1].output < 0 && reads(prev) == 1;
        match groups.last_mut() {
            Some(g) if chained => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

/// The key: inputs read only as copy sources from a local directory contribute the checksum of
/// what is copied, not of the whole directory.
fn key(
    ctx: &SolveCtx,
    vertex: &Vertex,
    file: &pb::FileOp,
    inputs: &[Arc<VertexResult>],
) -> Result<String, SolveError> {
    let mut parts = Vec::new();
    for (idx, (input, result)) in vertex.op.inputs.iter().zip(inputs).enumerate() {
        let idx = idx as i64;
        let copies: Vec<&pb::FileActionCopy> = file
            .actions
            .iter()
            .filter(|a| a.secondary_input == idx)
            .filter_map(|a| match &a.action {
                Some(Action::Copy(c)) => Some(c),
                _ => None,
            })
            .collect();
        let only_copy_source = !copies.is_empty() && file.actions.iter().all(|a| a.input != idx);
        match (&result.local, only_copy_source) {
            (Some(local), true) => {
                let mut part = String::from("selected:");
                for c in copies {
                    let sum = local
                        .selection_checksum(
                            &c.src,
                            c.allow_wildcard,
                            c.allow_empty_wildcard,
                            c.follow_symlink,
                        )
                        .map_err(|e| SolveError::msg(e.to_string()))?;
                    part.push_str(&sum);
                    part.push(',');
                }
                parts.push(part);
            }
            _ => parts.push(SolveCtx::input_part(input, result)),
        }
    }
    Ok(ctx.key(vertex, &parts))
}

fn fail(what: impl std::fmt::Display) -> impl Fn(io::Error) -> SolveError {
    let what = what.to_string();
    move |e| SolveError::msg(format!("{what}: {e}"))
}

fn run_action(
    root: &Path,
    src_root: Option<&Path>,
    linker: Option<Linker>,
    action: &pb::FileAction,
) -> Result<(), SolveError> {
    match &action.action {
        Some(Action::Copy(c)) => {
            let src_root = src_root.ok_or_else(|| SolveError::msg("copy without a source"))?;
            copy(root, src_root, linker, c)
        }
        Some(Action::Mkdir(m)) => mkdir(root, m),
        Some(Action::Mkfile(m)) => mkfile(root, m),
        Some(Action::Rm(r)) => rm(root, r),
        Some(Action::Symlink(s)) => symlink(root, s),
        None => Ok(()),
    }
}

fn set_time(path: &Path, ts: i64) {
    if ts == -1 || ts == 0 {
        return;
    }
    let t = filetime::FileTime::from_unix_time(
        ts.div_euclid(1_000_000_000),
        ts.rem_euclid(1_000_000_000) as u32,
    );
    let _ = filetime::set_symlink_file_times(path, t, t);
}

/// mkdir -p inside `root`, giving created directories `mode` and `owner`.
fn mkdir_all(
    root: &Path,
    path: &str,
    mode: u32,
    owner: Option<Owner>,
    ts: i64,
) -> Result<PathBuf, SolveError> {
    let clean = clean_abs(path);
    let mut cur = String::new();
    let mut host = root.to_path_buf();
    for comp in clean.split('/').filter(|c| !c.is_empty()) {
        cur.push('/');
        cur.push_str(comp);
        host = resolve_in_root(root, &cur, true).map_err(fail(&cur))?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SolveError::msg(format!(
                    "mkdir {clean}: {cur} is not a directory"
                )))
            }
            Err(_) => {
                fs::create_dir(&host).map_err(fail(format!("mkdir {cur}")))?;
                fs::set_permissions(&host, fs::Permissions::from_mode(mode)).map_err(fail(&cur))?;
                apply_owner(&host, owner).map_err(fail(&cur))?;
                set_time(&host, ts);
            }
        }
    }
    Ok(host)
}

fn mkdir(root: &Path, m: &pb::FileActionMkDir) -> Result<(), SolveError> {
    let own = owner(root, &m.owner)?;
    let mode = (m.mode as u32) & 0o7777;
    if m.make_parents {
        mkdir_all(root, &m.path, mode, own, m.timestamp)?;
        return Ok(());
    }
    let clean = clean_abs(&m.path);
    let host = resolve_in_root(root, &clean, true).map_err(fail(&clean))?;
    if host.is_dir() {
        return Ok(());
    }
    fs::create_dir(&host).map_err(fail(format!("mkdir {clean}")))?;
    fs::set_permissions(&host, fs::Permissions::from_mode(mode)).map_err(fail(&clean))?;
    apply_owner(&host, own).map_err(fail(&clean))?;
    set_time(&host, m.timestamp);
    Ok(())
}

fn mkfile(root: &Path, m: &pb::FileActionMkFile) -> Result<(), SolveError> {
    let own = owner(root, &m.owner)?;
    let clean = clean_abs(&m.path);
    let host = resolve_in_root(root, &clean, false).map_err(fail(&clean))?;
    if fs::symlink_metadata(&host)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        return Err(SolveError::msg(format!("mkfile {clean}: is a directory")));
    }
    let _ = fs::remove_file(&host);
    fs::write(&host, &m.data).map_err(fail(format!("mkfile {clean}")))?;
    fs::set_permissions(&host, fs::Permissions::from_mode((m.mode as u32) & 0o7777))
        .map_err(fail(&clean))?;
    apply_owner(&host, own).map_err(fail(&clean))?;
    set_time(&host, m.timestamp);
    Ok(())
}

fn rm(root: &Path, r: &pb::FileActionRm) -> Result<(), SolveError> {
    let clean = clean_abs(&r.path);
    let targets = if r.allow_wildcard && glob::has_meta(&clean) {
        expand_wildcard(root, &clean, false)?
    } else {
        vec![resolve_in_root(root, &clean, false).map_err(fail(&clean))?]
    };
    if targets.is_empty() && !r.allow_not_found {
        return Err(SolveError::msg(format!("rm {clean}: not found")));
    }
    for host in targets {
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&host).map_err(fail(format!("rm {clean}")))?
            }
            Ok(_) => fs::remove_file(&host).map_err(fail(format!("rm {clean}")))?,
            Err(_) if r.allow_not_found => {}
            Err(_) => return Err(SolveError::msg(format!("rm {clean}: not found"))),
        }
    }
    Ok(())
}

fn symlink(root: &Path, s: &pb::FileActionSymlink) -> Result<(), SolveError> {
    let clean = clean_abs(&s.newpath);
    let host = resolve_in_root(root, &clean, false).map_err(fail(&clean))?;
    std::os::unix::fs::symlink(&s.oldpath, &host).map_err(fail(format!("symlink {clean}")))?;
    let own = owner(root, &s.owner)?;
    apply_owner(&host, own).map_err(fail(&clean))?;
    set_time(&host, s.timestamp);
    Ok(())
}

/// Host paths in `root` matching a wildcard in-image path (wildcards in the last component
/// and in directories, like Go's filepath.Glob).
fn expand_wildcard(root: &Path, pattern: &str, follow: bool) -> Result<Vec<PathBuf>, SolveError> {
    let mut current: Vec<String> = vec![String::new()];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &current {
            if glob::has_meta(comp) {
                let dir = resolve_in_root(root, if base.is_empty() { "/" } else { base }, true)
                    .map_err(fail(pattern))?;
                let Ok(rd) = fs::read_dir(&dir) else { continue };
                let mut names: Vec<String> = rd
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| glob::path_match(comp, n))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| format!("{base}/{n}")));
            } else {
                next.push(format!("{base}/{comp}"));
            }
        }
        current = next;
    }
    let mut out = Vec::new();
    for p in current {
        let host = resolve_in_root(root, &p, follow).map_err(fail(&p))?;
        if fs::symlink_metadata(&host).is_ok() {
            out.push(host);
        }
    }
    Ok(out)
}

struct CopyCtx<'a> {
    dest_root: &'a Path,
    owner: Option<Owner>,
    mode: ModeSpec,
    /// A directory source's contents are copied into the destination (`dirCopyContents`).
    contents: bool,
    timestamp: i64,
    /// (dev, inode) of already copied files → their copy, to keep hard links linked.
    links: HashMap<(u64, u64), PathBuf>,
    linker: Option<Linker>,
    /// Destinations hard-linked straight into the upper directory, which the mounted view
    /// may still believe absent.
    linked: HashSet<PathBuf>,
    include: Vec<String>,
    exclude: Vec<String>,
}

/// Lets a copy hard-link a source file instead of copying it (overlayfs only): the real layer
/// directories behind the source mount, and the new layer's upper directory behind the
/// destination mount. Committed layers are never written again, so a copy that would get
/// exactly its source's metadata (owner, mode, times) may share the source's inode; creating
/// inodes is most of the cost of copying many small files. Anything unusual (the destination's
/// parent not yet in the upper directory, an entry in the way, a source the layers do not
/// show plainly) falls back to a real copy through the mount.
struct Linker {
    src_mount: PathBuf,
    /// The source chain's layer directories, top first.
    src_layers: Vec<PathBuf>,
    dest_mount: PathBuf,
    upper: PathBuf,
    /// Parent directory → whether it is a real directory, reached without symlinks, in each
    /// of `src_layers`.
    parents: HashMap<PathBuf, Vec<bool>>,
}

impl Linker {
    /// Where `dst` (a path under the destination mount) is in the upper directory.
    fn upper_path(&self, dst: &Path) -> Option<PathBuf> {
        dst.strip_prefix(&self.dest_mount)
            .ok()
            .map(|rel| self.upper.join(rel))
    }

    /// Hard-links the layer file behind `src` (seen through the source mount as `meta`) to
    /// `dst`'s place in the upper directory. False when that cannot be done safely.
    fn link(&mut self, src: &Path, meta: &fs::Metadata, dst: &Path) -> bool {
        let Ok(rel) = src.strip_prefix(&self.src_mount) else {
            return false;
        };
        let rel = rel.to_path_buf();
        let Some(real) = self.layer_file(&rel, meta) else {
            return false;
        };
        let Some(upper) = self.upper_path(dst) else {
            return false;
        };
        let parent_ok = upper
            .parent()
            .is_some_and(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
        parent_ok && fs::hard_link(&real, &upper).is_ok()
    }

    /// The file in the topmost layer that has `rel`, if it is the very inode the mount shows.
    fn layer_file(&mut self, rel: &Path, meta: &fs::Metadata) -> Option<PathBuf> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let Linker {
            src_layers,
            parents,
            ..
        } = self;
        if !parents.contains_key(parent) {
            let plain = src_layers.iter().map(|l| plain_dir(l, parent)).collect();
            parents.insert(parent.to_path_buf(), plain);
        }
        for (layer, plain) in src_layers.iter().zip(&parents[parent]) {
            if !plain {
                // Absent here (or not a plain directory): a lower layer may have it.
                continue;
            }
            let candidate = layer.join(rel);
            match fs::symlink_metadata(&candidate) {
                Ok(m) => {
                    let same = m.is_file() && m.ino() == meta.ino() && m.len() == meta.len();
                    return same.then_some(candidate);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => return None,
            }
        }
        None
    }
}

/// Whether `root/rel` is a directory reached through directories only (no symlink on the way,
/// so nothing outside `root`).
fn plain_dir(root: &Path, rel: &Path) -> bool {
    let mut path = root.to_path_buf();
    for c in rel.components() {
        path.push(c);
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return false;
        }
    }
    true
}

fn copy(
    dest_root: &Path,
    src_root: &Path,
    linker: Option<Linker>,
    c: &pb::FileActionCopy,
) -> Result<(), SolveError> {
    let src_clean = clean_abs(&c.src);
    let sources = if c.allow_wildcard && glob::has_meta(&src_clean) {
        let m = expand_wildcard(src_root, &src_clean, c.follow_symlink)?;
        if m.is_empty() {
            if c.allow_empty_wildcard {
                return Ok(());
            }
            return Err(SolveError::msg(format!("{src_clean} not found")));
        }
        m
    } else {
        let p =
            resolve_in_root(src_root, &src_clean, c.follow_symlink).map_err(fail(&src_clean))?;
        if fs::symlink_metadata(&p).is_err() {
            return Err(SolveError::msg(format!(
                "failed to calculate checksum of ref: \"{src_clean}\": not found"
            )));
        }
        vec![p]
    };
    let mode = ModeSpec::new(c.mode, &c.mode_str).map_err(SolveError::msg)?;
    let owner = owner(dest_root, &c.owner)?;
    let mut cc = CopyCtx {
        dest_root,
        owner,
        mode,
        contents: c.dir_copy_contents,
        timestamp: c.timestamp,
        links: HashMap::new(),
        linker,
        linked: HashSet::new(),
        include: c.include_patterns.clone(),
        exclude: c.exclude_patterns.clone(),
    };
    let dest_clean = clean_abs(&c.dest);
    let dest_is_dir_hint = c.dest.ends_with('/') || c.dest.ends_with("/.") || sources.len() > 1;
    for src in sources {
        let meta = fs::symlink_metadata(&src).map_err(fail(&src_clean))?;
        if c.attempt_unpack_docker_compatibility && meta.is_file() && is_archive(&src) {
            let dir = mkdir_all(dest_root, &dest_clean, 0o755, owner, -1)?;
            unpack(&src, &dir)?;
            continue;
        }
        let dest_host = resolve_in_root(dest_root, &dest_clean, true).map_err(fail(&dest_clean))?;
        let dest_exists_dir = dest_host.is_dir();
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = if meta.is_dir() && c.dir_copy_contents {
            dest_clean.clone()
        } else if dest_is_dir_hint || dest_exists_dir {
            format!("{}/{}", dest_clean.trim_end_matches('/'), name)
        } else {
            dest_clean.clone()
        };
        let parent = Path::new(&target)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        if c.create_dest_path {
            mkdir_all(dest_root, &parent, 0o755, owner, -1)?;
        } else if !resolve_in_root(dest_root, &parent, true)
            .map(|p| p.is_dir())
            .unwrap_or(false)
        {
            return Err(SolveError::msg(format!(
                "failed to stat {}: no such file or directory",
                c.dest
            )));
        }
        copy_entry(&mut cc, &src, &target, "")?;
    }
    Ok(())
}

fn excluded(cc: &CopyCtx, rel: &str) -> bool {
    if rel.is_empty() {
        return false;
    }
    if cc.exclude.iter().any(|p| glob::path_match(p, rel)) {
        return true;
    }
    false
}

fn included(cc: &CopyCtx, rel: &str, is_dir: bool) -> bool {
    if cc.include.is_empty() || rel.is_empty() {
        return true;
    }
    cc.include.iter().any(|p| {
        glob::path_match(p, rel)
            || rel.starts_with(&format!("{}/", p.trim_end_matches('/')))
            || (is_dir && p.starts_with(&format!("{rel}/")))
    })
}

/// Copy `src` (a host path) to the in-image path `target` under `cc.dest_root`.
fn copy_entry(cc: &mut CopyCtx, src: &Path, target: &str, rel: &str) -> Result<(), SolveError> {
    let meta = fs::symlink_metadata(src).map_err(fail(src.display()))?;
    if excluded(cc, rel) || !included(cc, rel, meta.is_dir()) {
        return Ok(());
    }
    let dst = resolve_in_root(cc.dest_root, target, false).map_err(fail(target))?;
    if cc.linked.remove(&dst) {
        // Written again (two sources, one destination): the mount does not know the link.
        if let Some(upper) = cc.linker.as_ref().and_then(|l| l.upper_path(&dst)) {
            fs::remove_file(&upper).map_err(fail(target))?;
        }
    }
    let ft = meta.file_type();
    let uid_gid = cc
        .owner
        .map(|o| (o.uid, o.gid))
        .unwrap_or((meta.uid(), meta.gid()));
    if ft.is_dir() {
        let existed = fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir());
        match fs::symlink_metadata(&dst) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&dst).map_err(fail(target))?;
                fs::create_dir(&dst).map_err(fail(target))?;
            }
            Err(_) => fs::create_dir(&dst).map_err(fail(target))?,
        }
        let mut names: Vec<_> = fs::read_dir(src)
            .map_err(fail(src.display()))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            let child_target = format!("{}/{}", target.trim_end_matches('/'), n.to_string_lossy());
            let child_rel = if rel.is_empty() {
                n.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", n.to_string_lossy())
            };
            copy_entry(cc, &src.join(&n), &child_target, &child_rel)?;
        }
        // The directory whose contents are copied is the destination itself, made as
        // fsutil's `MkdirAll` makes it (0755, or the octal --chmod) when it did not exist, and
        // left alone when it did.
        let mode = match (rel.is_empty() && cc.contents, &cc.mode) {
            (false, m) => Some(m.for_source(meta.mode(), true)),
            (true, _) if existed => None,
            (true, ModeSpec::Octal(m)) => Some(*m),
            (true, _) => Some(0o755),
        };
        if let Some(mode) = mode {
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(fail(target))?;
        }
        if rel.is_empty() && cc.contents && existed {
            return Ok(());
        }
    } else {
        if let Ok(m) = fs::symlink_metadata(&dst) {
            if m.is_dir() {
                fs::remove_dir_all(&dst).map_err(fail(target))?;
            } else {
                fs::remove_file(&dst).map_err(fail(target))?;
            }
        }
        if ft.is_symlink() {
            let link = fs::read_link(src).map_err(fail(src.display()))?;
            std::os::unix::fs::symlink(&link, &dst).map_err(fail(target))?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = cc.links.get(&key) {
                    match cc.linker.as_ref().filter(|_| cc.linked.contains(first)) {
                        Some(l) => {
                            let (Some(first), Some(upper)) =
                                (l.upper_path(first), l.upper_path(&dst))
                            else {
                                return Err(SolveError::msg(format!("{target}: not in the layer")));
                            };
                            fs::hard_link(first, upper).map_err(fail(target))?;
                            cc.linked.insert(dst);
                        }
                        None => fs::hard_link(first, &dst).map_err(fail(target))?,
                    }
                    return Ok(());
                }
                cc.links.insert(key, dst.clone());
            }
            let same_metadata = crate::sys::euid() == 0
                && uid_gid == (meta.uid(), meta.gid())
                && cc.mode.for_source(meta.mode(), false) == meta.mode() & 0o7777
                && (cc.timestamp == -1 || cc.timestamp == 0);
            if same_metadata {
                if let Some(l) = cc.linker.as_mut() {
                    if l.link(src, &meta, &dst) {
                        cc.linked.insert(dst);
                        return Ok(());
                    }
                }
            }
            fs::copy(src, &dst).map_err(fail(target))?;
            let mode = cc.mode.for_source(meta.mode(), false);
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(fail(target))?;
            crate::fsutil::copy_xattrs(src, &dst);
        } else {
            // Devices, fifos and sockets are not copied.
            return Ok(());
        }
    }
    if crate::sys::euid() == 0 {
        std::os::unix::fs::lchown(&dst, Some(uid_gid.0), Some(uid_gid.1)).map_err(fail(target))?;
        // chown(2) clears setuid and setgid: give them back.
        let mode = cc.mode.for_source(meta.mode(), ft.is_dir());
        if !ft.is_symlink() && mode & 0o6000 != 0 {
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(fail(target))?;
        }
    }
    if cc.timestamp != -1 && cc.timestamp != 0 {
        set_time(&dst, cc.timestamp);
    } else {
        let t = filetime::FileTime::from_unix_time(meta.mtime(), meta.mtime_nsec() as u32);
        let _ = filetime::set_symlink_file_times(&dst, t, t);
    }
    Ok(())
}

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || h.starts_with(b"BZh")
        || h.starts_with(&XZ_MAGIC)
        || (n >= 262 && &h[257..262] == b"ustar")
}

const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];

/// A reader of the tar inside `archive`: gzip and zstd (as layers), bzip2, xz, or a plain tar.
/// An xz archive is decompressed to a temporary file first (the decoder is not a `Read`).
fn open_archive(archive: &Path, what: &str) -> Result<Box<dyn Read + Send>, SolveError> {
    let mut head = [0u8; 6];
    let n = fs::File::open(archive)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| SolveError::msg(format!("ADD {what}: {e}")))?;
    let head = &head[..n];
    if head.starts_with(b"BZh") {
        let file =
            fs::File::open(archive).map_err(|e| SolveError::msg(format!("ADD {what}: {e}")))?;
        return Ok(Box::new(bzip2::read::MultiBzDecoder::new(
            std::io::BufReader::new(file),
        )));
    }
    if head == XZ_MAGIC {
        let file =
            fs::File::open(archive).map_err(|e| SolveError::msg(format!("ADD {what}: {e}")))?;
        let mut tmp =
            tempfile::tempfile().map_err(|e| SolveError::msg(format!("ADD {what}: {e}")))?;
        lzma_rs::xz_decompress(
            &mut std::io::BufReader::new(file),
            &mut std::io::BufWriter::new(&mut tmp),
        )
        .map_err(|e| SolveError::msg(format!("ADD {what}: not a valid xz archive: {e}")))?;
        use std::io::Seek;
        tmp.rewind()
            .map_err(|e| SolveError::msg(format!("ADD {what}: {e}")))?;
        return Ok(Box::new(tmp));
    }
    kiln_oci::layer::open_layer(archive).map_err(|e| SolveError::msg(format!("ADD {what}: {e}")))
}

fn unpack(archive: &Path, dest: &Path) -> Result<(), SolveError> {
    let what = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reader = open_archive(archive, &what)?;
    let opts = kiln_oci::layer::ApplyOptions::default();
    kiln_oci::layer::apply_layer(reader, dest, &opts)
        .map_err(|e| SolveError::msg(format!("ADD {what}: {e}")))?;
    Ok(())
}
