//! Runner labels as act_runner writes them: `name[:schema[:arg]]`, schema `host` (default) or
//! `docker` (`ubuntu-latest:docker://node:20`).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub schema: Schema,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    Host,
    /// A container image.
    Docker(String),
}

impl Label {
    pub fn parse(s: &str) -> Result<Label, String> {
        let mut parts = s.splitn(3, ':');
        let name = parts.next().unwrap_or_default().trim().to_string();
        if name.is_empty() {
            return Err(format!("label `{s}` has no name"));
        }
        let schema = match (parts.next(), parts.next()) {
            (None, _) | (Some("host"), _) => Schema::Host,
            (Some("docker"), Some(arg)) => Schema::Docker(arg.trim_start_matches("//").to_string()),
            (Some("docker"), None) => {
                return Err(format!(
                    "label `{s}`: docker needs an image (name:docker://image)"
                ))
            }
            (Some(other), _) => {
                return Err(format!(
                    "label `{s}`: unknown schema `{other}` (use host or docker)"
                ))
            }
        };
        Ok(Label { name, schema })
    }
}

/// The label names sent to Gitea (the part before the first `:`).
pub fn names(labels: &[String]) -> Vec<String> {
    labels
        .iter()
        .filter_map(|l| Label::parse(l).ok())
        .map(|l| l.name)
        .collect()
}

/// The label of this runner that a job's `runs-on` picks: the first `runs-on` entry that names one.
pub fn pick<'a>(labels: &'a [Label], runs_on: &[String]) -> Option<&'a Label> {
    runs_on
        .iter()
        .find_map(|want| labels.iter().find(|l| l.name == *want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(
            Label::parse("linux").unwrap(),
            Label {
                name: "linux".into(),
                schema: Schema::Host
            }
        );
        assert_eq!(Label::parse("self:host").unwrap().schema, Schema::Host);
        assert_eq!(
            Label::parse("ubuntu-latest:docker://docker.gitea.com/runner-images:ubuntu-latest")
                .unwrap()
                .schema,
            Schema::Docker("docker.gitea.com/runner-images:ubuntu-latest".into())
        );
        assert!(Label::parse("x:vm:y").is_err());
        assert!(Label::parse(":host").is_err());
        assert_eq!(
            names(&["a:host".into(), "b:docker://i".into()]),
            vec!["a", "b"]
        );
    }
}
