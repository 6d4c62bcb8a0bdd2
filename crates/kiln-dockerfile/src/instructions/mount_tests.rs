use super::*;

fn parse(s: &str) -> Result<Mount, Error> {
    parse_mount(s, &mut |v: &str| Ok(v.to_string()))
}

#[test]
fn mount_options_parse_with_buildkit_defaults() {
    let m =
        parse("type=cache,target=/root/.cache,id=go,sharing=locked,uid=1000,mode=0700").unwrap();
    assert_eq!(m.kind, MountType::Cache);
    assert_eq!(m.target, "/root/.cache");
    assert_eq!(m.id.as_deref(), Some("go"));
    assert_eq!(m.sharing, Some(Sharing::Locked));
    assert_eq!((m.uid, m.mode), (Some(1000), Some(0o700)));
    assert!(!m.readonly, "cache mounts are writable by default");

    let m = parse("target=/src,from=builder,source=/out").unwrap();
    assert_eq!(m.kind, MountType::Bind);
    assert!(m.readonly, "bind mounts are read-only by default");
    let m = parse("type=bind,dst=/src,rw").unwrap();
    assert!(!m.readonly);
    let m = parse("type=tmpfs,target=/tmp,size=64m").unwrap();
    assert_eq!(m.size, 64 * 1024 * 1024);
    let m = parse("type=secret,id=tok,env=TOKEN,required").unwrap();
    assert!(m.required);
    assert_eq!(m.env.as_deref(), Some("TOKEN"));
    let m = parse("type=ssh,required=true").unwrap();
    assert!(m.required);
}

#[test]
fn invalid_mount_options_are_rejected() {
    let cases: &[(&str, &str)] = &[
        ("type=volume,target=/x", "unsupported mount type \"volume\""),
        (
            "type=bind,target=/x,mode=0700",
            "mode not allowed for \"bind\" type mounts",
        ),
        (
            "type=cache,target=/x,required",
            "unexpected key 'required' for mount type 'cache'",
        ),
        (
            "type=secret",
            "invalid secret mount. one of source, target required",
        ),
        ("type=secret,id=a,src=b", "both source and id can't be set"),
        (
            "type=bind,target=/x,sharing=locked",
            "invalid cache sharing set for bind mount",
        ),
        (
            "type=cache,target=/x,sharing=bogus",
            "unsupported sharing value \"bogus\"",
        ),
        ("type=cache,targte=/x", "unexpected key 'targte'"),
        (
            "type=bind,target=/x,from=$STAGE",
            "doesn't support variable expansion",
        ),
        (
            "type=bind,nonsense",
            "invalid field 'nonsense' must be a key=value pair",
        ),
        (
            "type=tmpfs,target=/x,size=lots",
            "invalid value for size: lots",
        ),
    ];
    for (input, want) in cases {
        let e = parse(input).unwrap_err();
        assert!(e.message.contains(want), "{input}: {e}");
    }
}
