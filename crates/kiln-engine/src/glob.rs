//! Go's `filepath.Match` (the wildcard syntax of COPY/ADD sources and `rm` paths): `*` and `?`
//! never match `/`, `[...]` classes with ranges and `^`/`!` negation, `\` escapes.

pub fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Does `name` match `pattern` (both as whole strings)? Malformed patterns match nothing.
pub fn path_match(pattern: &str, name: &str) -> bool {
    match_from(
        &pattern.chars().collect::<Vec<_>>(),
        &name.chars().collect::<Vec<_>>(),
    )
}

fn match_from(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    // Position to retry from after the last '*': (pattern index after star, name index).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                '?' if n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, len)) = match_class(&p[pi..], n[ni]) {
                        if ok && n[ni] != '/' {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else {
                        return false;
                    }
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if c != '?' && c != '\\' && c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        // Mismatch: let the last star swallow one more byte, unless that byte is '/'.
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                pi = sp;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            _ => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match one byte against a class starting at `p[0] == '['`. Returns (matched, class length).
fn match_class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('^') | Some('!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = match p.get(i)? {
            ']' if !first => break,
            '\\' => {
                i += 1;
                *p.get(i)?
            }
            &b => b,
        };
        i += 1;
        first = false;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&b| b != ']') {
            i += 1;
            let h = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            h
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Some((matched != negate, i + 1))
}

#[cfg(test)]
mod tests {
    use super::path_match;

    #[test]
    fn go_filepath_match_cases() {
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("*.txt", "notes.txt", true),
            ("*.txt", "dir/notes.txt", false),
            ("src/*.c", "src/main.c", true),
            ("?", "/", false),
            ("*x", "xxx", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(path_match(pattern, name), want, "{pattern} vs {name}");
        }
    }
}
