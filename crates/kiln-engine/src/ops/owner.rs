//! Who owns what a file op writes (`COPY --chown`, `mkdir`/`mkfile` owners): ids resolved in
//! the destination's `/etc/passwd` and `/etc/group`, as BuildKit's `readUser` does.

use crate::fsutil::resolve_in_root;
use crate::solver::SolveError;
use bollard_buildkit_proto::pb;
use std::fs;
use std::io;
use std::path::Path;

/// Owner for new files: resolved against the destination's /etc/passwd and /etc/group.
#[derive(Clone, Copy)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// As BuildKit's `readUser`: a user name takes its uid and primary gid from the destination's
/// `/etc/passwd`, a group name its gid from `/etc/group`; a name that is not there leaves the
/// ids at 0 (no error), a number is both uid and gid unless a group is given.
pub(crate) fn owner(root: &Path, opt: &Option<pb::ChownOpt>) -> Result<Option<Owner>, SolveError> {
    let Some(opt) = opt else { return Ok(None) };
    // The fields of the first line of `file` (in the destination) whose name is `name`.
    let entry = |file: &str, name: &str| -> Result<Option<Vec<String>>, SolveError> {
        let path = resolve_in_root(root, file, true).map_err(SolveError::io("resolving"))?;
        let text = fs::read_to_string(&path).map_err(|e| {
            let why = match e.kind() {
                io::ErrorKind::NotFound => "no such file or directory".to_string(),
                _ => e.to_string(),
            };
            SolveError::msg(format!("open {file}: {why}"))
        })?;
        Ok(text.lines().find_map(|l| {
            let f: Vec<String> = l.split(':').map(str::to_string).collect();
            (f.len() > 2 && f[0] == name).then_some(f)
        }))
    };
    let id = |f: &[String], i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let user = opt.user.as_ref().and_then(|u| u.user.as_ref());
    let group = opt.group.as_ref().and_then(|u| u.user.as_ref());
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let mut o = Owner { uid: 0, gid: 0 };
    match user {
        Some(pb::user_opt::User::ById(id)) => (o.uid, o.gid) = (*id, *id),
        Some(pb::user_opt::User::ByName(n)) => {
            if let Some(f) = entry("/etc/passwd", &n.name)? {
                (o.uid, o.gid) = (id(&f, 2), id(&f, 3));
            }
        }
        None => {}
    }
    match group {
        Some(pb::user_opt::User::ById(id)) => o.gid = *id,
        Some(pb::user_opt::User::ByName(n)) => {
            if let Some(f) = entry("/etc/group", &n.name)? {
                o.gid = id(&f, 2);
            }
        }
        None => {}
    }
    Ok(Some(o))
}

pub(crate) fn apply_owner(path: &Path, owner: Option<Owner>) -> io::Result<()> {
    if let Some(o) = owner {
        std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid))?;
    }
    Ok(())
}
