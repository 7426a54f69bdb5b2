//! The functions of ESO's engine v2: Sprig's text functions (env and expandenv left out, as ESO
//! does) and ESO's own (`toYaml`, `fromYaml`, `filterPEM`, `jwkPublicKeyPem`,
//! `jwkPrivateKeyPem`), each as Sprig or ESO documents it. Go's builtins that allocate in proportion to their input (`print`, `printf`, `println`,
//! `html`, `js`, `urlquery`, `slice`) are replaced by bounded equivalents.
//!
//! Every function runs behind [`register`]'s wrapper, which charges steps for the arguments,
//! refuses results over [`MAX_VALUE_BYTES`] or [`MAX_VALUE_DEPTH`], and charges the result to
//! the template's memory budget. Functions whose result could be huge (`repeat`, `until`,
//! `replace`, `indent`, ...) check their estimate before they allocate. Error messages are
//! fixed text: they never quote an argument.
//!
//! Known differences from Sprig, each safer: `set`/`unset` return a new dict instead of
//! changing theirs in place (use `$d = set $d "k" "v"`); `fromJson`, `b64dec` and the regex
//! functions fail on invalid input instead of returning an empty or error string; `keys` and
//! `values` are sorted.

use std::{collections::BTreeMap, sync::Arc};

use base64::Engine as _;
use gotmpl::{FuncMap, TemplateError, Value};

use super::{Budget, MAX_LIST_LEN, MAX_VALUE_BYTES, MAX_VALUE_DEPTH, carry_bytes, uncarry_bytes};

type Fun = fn(&[Value]) -> Result<Value, String>;

/// Every template function, bound to `budget`.
pub(crate) fn func_map(budget: &Arc<Budget>) -> FuncMap {
    let mut m = FuncMap::new();
    let table: &[(&'static str, Fun)] = &[
        // Go builtins, bounded.
        ("print", print),
        ("println", println),
        ("printf", printf),
        ("html", |a| Ok(s(gotmpl::html_escape(&sprint(a)?)))),
        ("js", |a| Ok(s(gotmpl::js_escape(&sprint(a)?)))),
        ("urlquery", |a| Ok(s(gotmpl::url_encode(&sprint(a)?)))),
        ("slice", slice),
        // Strings.
        ("trim", |a| Ok(s(str_arg(a, 0)?.trim()))),
        ("trimAll", |a| {
            let cut = str_arg(a, 0)?;
            Ok(s(str_arg(a, 1)?.trim_matches(|c| cut.contains(c))))
        }),
        ("trimall", |a| {
            let cut = str_arg(a, 0)?;
            Ok(s(str_arg(a, 1)?.trim_matches(|c| cut.contains(c))))
        }),
        ("trimPrefix", |a| {
            let (p, t) = (str_arg(a, 0)?, str_arg(a, 1)?);
            Ok(s(t.strip_prefix(p.as_str()).unwrap_or(&t)))
        }),
        ("trimSuffix", |a| {
            let (p, t) = (str_arg(a, 0)?, str_arg(a, 1)?);
            Ok(s(t.strip_suffix(p.as_str()).unwrap_or(&t)))
        }),
        ("upper", |a| Ok(s(str_arg(a, 0)?.to_uppercase()))),
        ("lower", |a| Ok(s(str_arg(a, 0)?.to_lowercase()))),
        ("title", |a| Ok(s(title(&str_arg(a, 0)?, true)))),
        ("untitle", |a| Ok(s(title(&str_arg(a, 0)?, false)))),
        ("repeat", |a| {
            let (n, t) = (int_arg(a, 0)?.max(0) as usize, str_arg(a, 1)?);
            fits(n.saturating_mul(t.len()))?;
            Ok(s(t.repeat(n)))
        }),
        ("substr", substr),
        ("abbrev", |a| {
            let (width, t) = (int_arg(a, 0)?, str_arg(a, 1)?);
            let chars: Vec<char> = t.chars().collect();
            if width < 4 || chars.len() as i64 <= width {
                return Ok(s(t));
            }
            let keep: String = chars[..(width - 3) as usize].iter().collect();
            Ok(s(keep + "..."))
        }),
        ("initials", |a| {
            Ok(s(str_arg(a, 0)?
                .split_whitespace()
                .filter_map(|w| w.chars().next())
                .collect::<String>()))
        }),
        ("swapcase", |a| {
            Ok(s(str_arg(a, 0)?
                .chars()
                .flat_map(|c| {
                    let swapped: Vec<char> = if c.is_uppercase() {
                        c.to_lowercase().collect()
                    } else {
                        c.to_uppercase().collect()
                    };
                    swapped
                })
                .collect::<String>()))
        }),
        ("trunc", trunc),
        ("nospace", |a| {
            Ok(s(str_arg(a, 0)?
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()))
        }),
        ("contains", |a| {
            Ok(Value::Bool(str_arg(a, 1)?.contains(&str_arg(a, 0)?)))
        }),
        ("hasPrefix", |a| {
            Ok(Value::Bool(str_arg(a, 1)?.starts_with(&str_arg(a, 0)?)))
        }),
        ("hasSuffix", |a| {
            Ok(Value::Bool(str_arg(a, 1)?.ends_with(&str_arg(a, 0)?)))
        }),
        ("quote", |a| {
            let parts: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Nil))
                .map(|v| go_quote(&strval(v)))
                .collect();
            Ok(s(parts.join(" ")))
        }),
        ("squote", |a| {
            let parts: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Nil))
                .map(|v| format!("'{}'", strval(v)))
                .collect();
            Ok(s(parts.join(" ")))
        }),
        ("cat", |a| {
            let parts: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Nil))
                .map(strval)
                .collect();
            Ok(s(parts.join(" ")))
        }),
        ("indent", |a| {
            Ok(s(indent(int_arg(a, 0)?, &str_arg(a, 1)?)?))
        }),
        ("nindent", |a| {
            Ok(s(format!("\n{}", indent(int_arg(a, 0)?, &str_arg(a, 1)?)?)))
        }),
        ("replace", |a| {
            let (old, new, src) = (str_arg(a, 0)?, str_arg(a, 1)?, str_arg(a, 2)?);
            let count = if old.is_empty() {
                src.chars().count() + 1
            } else {
                src.matches(old.as_str()).count()
            };
            fits(src.len() + count.saturating_mul(new.len()))?;
            Ok(s(src.replace(old.as_str(), &new)))
        }),
        ("plural", |a| {
            let n = int_arg(a, 2)?;
            Ok(if n == 1 { a[0].clone() } else { a[1].clone() })
        }),
        ("toString", |a| Ok(s(strval(arg(a, 0)?)))),
        ("toStrings", |a| {
            Ok(list(list_arg(a, 0)?.iter().map(|v| s(strval(v))).collect()))
        }),
        ("split", |a| {
            let (sep, t) = (str_arg(a, 0)?, str_arg(a, 1)?);
            let parts = split(&t, &sep, None)?;
            Ok(indexed_dict(parts))
        }),
        ("splitn", |a| {
            let (sep, n, t) = (str_arg(a, 0)?, int_arg(a, 1)?, str_arg(a, 2)?);
            let parts = split(&t, &sep, (n >= 0).then_some(n as usize))?;
            Ok(indexed_dict(parts))
        }),
        ("splitList", |a| {
            let (sep, t) = (str_arg(a, 0)?, str_arg(a, 1)?);
            Ok(list(split(&t, &sep, None)?.into_iter().map(s).collect()))
        }),
        ("join", |a| {
            let sep = str_arg(a, 0)?;
            let items: Vec<String> = match arg(a, 1)? {
                Value::List(l) => l.iter().map(strval).collect(),
                other => vec![strval(other)],
            };
            fits(items.iter().map(|i| i.len() + sep.len()).sum())?;
            Ok(s(items.join(&sep)))
        }),
        ("sortAlpha", |a| {
            let mut items: Vec<String> = list_arg(a, 0)?.iter().map(strval).collect();
            items.sort();
            Ok(list(items.into_iter().map(s).collect()))
        }),
        // Encodings and hashes (over the bytes a string carries).
        ("b64enc", |a| {
            Ok(s(
                base64::engine::general_purpose::STANDARD.encode(bytes_arg(a, 0)?)
            ))
        }),
        ("b64dec", |a| {
            let t = str_arg(a, 0)?;
            base64::engine::general_purpose::STANDARD
                .decode(t.trim())
                .map(|b| s(carry_bytes(&b)))
                .map_err(|_| "input is not base64".into())
        }),
        ("b32enc", |a| Ok(s(base32_encode(&bytes_arg(a, 0)?)))),
        ("b32dec", |a| {
            base32_decode(str_arg(a, 0)?.trim())
                .map(|b| s(carry_bytes(&b)))
                .ok_or_else(|| "input is not base32".into())
        }),
        ("hexdec", |a| {
            hex::decode(str_arg(a, 0)?.trim())
                .map(|b| s(carry_bytes(&b)))
                .map_err(|_| "input is not hexadecimal".into())
        }),
        ("sha1sum", |a| {
            use sha1::Digest as _;
            Ok(s(hex::encode(sha1::Sha1::digest(bytes_arg(a, 0)?))))
        }),
        ("sha256sum", |a| {
            use sha2::Digest as _;
            Ok(s(hex::encode(sha2::Sha256::digest(bytes_arg(a, 0)?))))
        }),
        ("sha512sum", |a| {
            use sha2::Digest as _;
            Ok(s(hex::encode(sha2::Sha512::digest(bytes_arg(a, 0)?))))
        }),
        ("adler32sum", |a| {
            let (mut x, mut y) = (1u32, 0u32);
            for b in bytes_arg(a, 0)? {
                x = (x + u32::from(b)) % 65521;
                y = (y + x) % 65521;
            }
            Ok(s(((y << 16) | x).to_string()))
        }),
        // Numbers.
        ("atoi", |a| {
            Ok(Value::Int(str_arg(a, 0)?.trim().parse().unwrap_or(0)))
        }),
        ("int", |a| Ok(Value::Int(to_int(arg(a, 0)?)))),
        ("int64", |a| Ok(Value::Int(to_int(arg(a, 0)?)))),
        ("float64", |a| Ok(Value::Float(to_float(arg(a, 0)?)))),
        ("add", |a| {
            Ok(Value::Int(
                a.iter().fold(0i64, |acc, v| acc.wrapping_add(to_int(v))),
            ))
        }),
        ("add1", |a| {
            Ok(Value::Int(to_int(arg(a, 0)?).wrapping_add(1)))
        }),
        ("sub", |a| {
            Ok(Value::Int(
                to_int(arg(a, 0)?).wrapping_sub(to_int(arg(a, 1)?)),
            ))
        }),
        ("mul", |a| {
            Ok(Value::Int(
                a.iter().fold(1i64, |acc, v| acc.wrapping_mul(to_int(v))),
            ))
        }),
        ("div", |a| {
            let d = to_int(arg(a, 1)?);
            to_int(arg(a, 0)?)
                .checked_div(d)
                .map(Value::Int)
                .ok_or_else(|| "division by zero".into())
        }),
        ("mod", |a| {
            let d = to_int(arg(a, 1)?);
            to_int(arg(a, 0)?)
                .checked_rem(d)
                .map(Value::Int)
                .ok_or_else(|| "division by zero".into())
        }),
        ("max", |a| {
            Ok(Value::Int(a.iter().map(to_int).max().unwrap_or(0)))
        }),
        ("biggest", |a| {
            Ok(Value::Int(a.iter().map(to_int).max().unwrap_or(0)))
        }),
        ("min", |a| {
            Ok(Value::Int(a.iter().map(to_int).min().unwrap_or(0)))
        }),
        ("until", |a| {
            let n = int_arg(a, 0)?;
            range_list(0, n, if n < 0 { -1 } else { 1 })
        }),
        ("untilStep", |a| {
            range_list(int_arg(a, 0)?, int_arg(a, 1)?, int_arg(a, 2)?)
        }),
        ("seq", seq),
        // Lists.
        ("list", |a| Ok(list(a.to_vec()))),
        ("tuple", |a| Ok(list(a.to_vec()))),
        ("append", append),
        ("push", append),
        ("mustAppend", append),
        ("mustPush", append),
        ("prepend", |a| {
            let mut items = vec![arg(a, 1)?.clone()];
            items.extend(list_arg(a, 0)?.iter().cloned());
            Ok(list(items))
        }),
        ("mustPrepend", |a| {
            let mut items = vec![arg(a, 1)?.clone()];
            items.extend(list_arg(a, 0)?.iter().cloned());
            Ok(list(items))
        }),
        ("first", |a| {
            Ok(list_arg(a, 0)?.first().cloned().unwrap_or(Value::Nil))
        }),
        ("mustFirst", |a| {
            Ok(list_arg(a, 0)?.first().cloned().unwrap_or(Value::Nil))
        }),
        ("last", |a| {
            Ok(list_arg(a, 0)?.last().cloned().unwrap_or(Value::Nil))
        }),
        ("mustLast", |a| {
            Ok(list_arg(a, 0)?.last().cloned().unwrap_or(Value::Nil))
        }),
        ("rest", |a| {
            Ok(list(list_arg(a, 0)?.iter().skip(1).cloned().collect()))
        }),
        ("mustRest", |a| {
            Ok(list(list_arg(a, 0)?.iter().skip(1).cloned().collect()))
        }),
        ("initial", |a| {
            let l = list_arg(a, 0)?;
            Ok(list(l[..l.len().saturating_sub(1)].to_vec()))
        }),
        ("mustInitial", |a| {
            let l = list_arg(a, 0)?;
            Ok(list(l[..l.len().saturating_sub(1)].to_vec()))
        }),
        ("reverse", |a| {
            Ok(list(list_arg(a, 0)?.iter().rev().cloned().collect()))
        }),
        ("mustReverse", |a| {
            Ok(list(list_arg(a, 0)?.iter().rev().cloned().collect()))
        }),
        ("uniq", uniq),
        ("mustUniq", uniq),
        ("without", without),
        ("mustWithout", without),
        ("has", |a| {
            let needle = arg(a, 0)?;
            Ok(Value::Bool(list_arg(a, 1)?.iter().any(|v| v == needle)))
        }),
        ("mustHas", |a| {
            let needle = arg(a, 0)?;
            Ok(Value::Bool(list_arg(a, 1)?.iter().any(|v| v == needle)))
        }),
        ("concat", |a| {
            let mut items = Vec::new();
            for v in a {
                match v {
                    Value::List(l) => items.extend(l.iter().cloned()),
                    Value::Nil => {}
                    _ => return Err("arguments must be lists".into()),
                }
            }
            Ok(list(items))
        }),
        ("compact", compact),
        ("mustCompact", compact),
        // Dicts.
        ("dict", dict),
        ("get", |a| {
            let (d, k) = (dict_arg(a, 0)?, str_arg(a, 1)?);
            Ok(d.get(k.as_str()).cloned().unwrap_or_else(|| s("")))
        }),
        ("set", |a| {
            let mut d = dict_arg(a, 0)?.clone();
            d.insert(str_arg(a, 1)?.into(), arg(a, 2)?.clone());
            Ok(Value::Map(Arc::new(d)))
        }),
        ("unset", |a| {
            let mut d = dict_arg(a, 0)?.clone();
            d.remove(str_arg(a, 1)?.as_str());
            Ok(Value::Map(Arc::new(d)))
        }),
        ("hasKey", |a| {
            Ok(Value::Bool(
                dict_arg(a, 0)?.contains_key(str_arg(a, 1)?.as_str()),
            ))
        }),
        ("pluck", |a| {
            let k = str_arg(a, 0)?;
            let mut out = Vec::new();
            for v in &a[1..] {
                if let Value::Map(d) = v
                    && let Some(x) = d.get(k.as_str())
                {
                    out.push(x.clone());
                }
            }
            Ok(list(out))
        }),
        ("keys", |a| {
            let mut out: Vec<Value> = Vec::new();
            for v in a {
                if let Value::Map(d) = v {
                    out.extend(d.keys().map(|k| Value::String(k.clone())));
                }
            }
            Ok(list(out))
        }),
        ("values", |a| {
            Ok(list(dict_arg(a, 0)?.values().cloned().collect()))
        }),
        ("pick", |a| {
            let d = dict_arg(a, 0)?;
            let keep: Vec<String> = a[1..].iter().map(strval).collect();
            Ok(map(d
                .iter()
                .filter(|(k, _)| keep.iter().any(|x| x == k.as_ref()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()))
        }),
        ("omit", |a| {
            let d = dict_arg(a, 0)?;
            let drop: Vec<String> = a[1..].iter().map(strval).collect();
            Ok(map(d
                .iter()
                .filter(|(k, _)| !drop.iter().any(|x| x == k.as_ref()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()))
        }),
        ("merge", |a| merge(a, false)),
        ("mustMerge", |a| merge(a, false)),
        ("mergeOverwrite", |a| merge(a, true)),
        ("mustMergeOverwrite", |a| merge(a, true)),
        ("dig", dig),
        ("deepCopy", |a| Ok(arg(a, 0)?.clone())),
        ("mustDeepCopy", |a| Ok(arg(a, 0)?.clone())),
        // Defaults and flow.
        ("default", |a| {
            let given = a.get(1).filter(|v| !empty(v));
            Ok(given.unwrap_or(arg(a, 0)?).clone())
        }),
        ("empty", |a| Ok(Value::Bool(a.first().is_none_or(empty)))),
        ("coalesce", |a| {
            Ok(a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Nil))
        }),
        ("all", |a| Ok(Value::Bool(a.iter().all(|v| !empty(v))))),
        ("any", |a| Ok(Value::Bool(a.iter().any(|v| !empty(v))))),
        ("ternary", |a| {
            Ok(if arg(a, 2)?.is_truthy() {
                a[0].clone()
            } else {
                a[1].clone()
            })
        }),
        ("fail", |_| {
            Err("fail was called (its message is withheld: it could quote a value)".into())
        }),
        // JSON and YAML.
        ("fromJson", from_json),
        ("mustFromJson", from_json),
        ("toJson", |a| to_json(a, false, true)),
        ("mustToJson", |a| to_json(a, false, true)),
        ("toPrettyJson", |a| to_json(a, true, true)),
        ("mustToPrettyJson", |a| to_json(a, true, true)),
        ("toRawJson", |a| to_json(a, false, false)),
        ("mustToRawJson", |a| to_json(a, false, false)),
        ("toYaml", to_yaml),
        ("fromYaml", from_yaml),
        // Regular expressions (Rust's regex: RE2 syntax, linear time, size-limited).
        ("regexMatch", |a| {
            Ok(Value::Bool(regex(a, 0)?.is_match(&str_arg(a, 1)?)))
        }),
        ("mustRegexMatch", |a| {
            Ok(Value::Bool(regex(a, 0)?.is_match(&str_arg(a, 1)?)))
        }),
        ("regexFind", regex_find),
        ("mustRegexFind", regex_find),
        ("regexFindAll", regex_find_all),
        ("mustRegexFindAll", regex_find_all),
        ("regexReplaceAll", |a| regex_replace(a, false)),
        ("mustRegexReplaceAll", |a| regex_replace(a, false)),
        ("regexReplaceAllLiteral", |a| regex_replace(a, true)),
        ("mustRegexReplaceAllLiteral", |a| regex_replace(a, true)),
        ("regexSplit", regex_split),
        ("mustRegexSplit", regex_split),
        ("regexQuoteMeta", |a| Ok(s(regex::escape(&str_arg(a, 0)?)))),
        // Types.
        ("typeOf", |a| Ok(s(type_of(arg(a, 0)?)))),
        ("typeIs", |a| {
            Ok(Value::Bool(str_arg(a, 0)? == type_of(arg(a, 1)?)))
        }),
        ("kindOf", |a| Ok(s(kind_of(arg(a, 0)?)))),
        ("kindIs", |a| {
            Ok(Value::Bool(str_arg(a, 0)? == kind_of(arg(a, 1)?)))
        }),
        // Paths.
        ("base", |a| Ok(s(path_base(&str_arg(a, 0)?)))),
        ("dir", |a| Ok(s(path_dir(&str_arg(a, 0)?)))),
        ("ext", |a| {
            let p = str_arg(a, 0)?;
            let base = p.rsplit('/').next().unwrap_or("");
            Ok(s(base.rfind('.').map(|i| &base[i..]).unwrap_or("")))
        }),
        ("isAbs", |a| {
            Ok(Value::Bool(str_arg(a, 0)?.starts_with('/')))
        }),
        // ESO's own.
        ("filterPEM", filter_pem),
        ("jwkPublicKeyPem", |a| {
            super::jwk::public_key_pem(&str_arg(a, 0)?).map(s)
        }),
        ("jwkPrivateKeyPem", |a| {
            super::jwk::private_key_pem(&str_arg(a, 0)?).map(s)
        }),
    ];
    for (name, f) in table {
        register(&mut m, budget, name, *f, 0);
    }
    // bcrypt at Go's default cost takes tens of milliseconds: a template gets ten of them.
    let heavy: &[(&'static str, Fun)] = &[("bcrypt", bcrypt), ("htpasswd", htpasswd)];
    for (name, f) in heavy {
        register(&mut m, budget, name, *f, BCRYPT_STEPS);
    }
    m
}

/// Steps charged for one bcrypt hash: a tenth of [`super::MAX_STEPS`].
const BCRYPT_STEPS: u64 = super::MAX_STEPS / 10;

/// Go's `bcrypt.DefaultCost`, which Sprig uses.
const BCRYPT_COST: u32 = 10;

/// Sprig's `bcrypt`: the password's bcrypt hash (`$2a$10$...`), with a new salt each time.
fn bcrypt(a: &[Value]) -> Result<Value, String> {
    bcrypt::hash_with_result(bytes_arg(a, 0)?, BCRYPT_COST)
        .map(|h| s(h.format_for_version(bcrypt::Version::TwoA)))
        .map_err(|_| "cannot hash (a password is at most 72 bytes)".into())
}

/// Sprig's `htpasswd user password [bcrypt|sha]`: one line of an htpasswd file, bcrypt unless
/// `sha` (`{SHA}` and the base64 SHA-1).
fn htpasswd(a: &[Value]) -> Result<Value, String> {
    let user = str_arg(a, 0)?;
    if user.contains(':') {
        return Err("invalid username (contains ':')".into());
    }
    let password = bytes_arg(a, 1)?;
    let line = match a.get(2).map(strval).as_deref() {
        Some("sha") => {
            use sha1::Digest as _;
            let digest = sha1::Sha1::digest(&password);
            format!(
                "{user}:{{SHA}}{}",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        }
        _ => {
            let hash = bcrypt::hash_with_result(&password, BCRYPT_COST)
                .map_err(|_| "cannot hash (a password is at most 72 bytes)".to_string())?;
            format!("{user}:{}", hash.format_for_version(bcrypt::Version::TwoA))
        }
    };
    Ok(s(line))
}

/// Adds `f` under `name`, bounded as the module doc says.
/// `extra`: steps charged besides those for the arguments.
fn register(m: &mut FuncMap, budget: &Arc<Budget>, name: &'static str, f: Fun, extra: u64) {
    let budget = budget.clone();
    m.insert(
        name.into(),
        Arc::new(move |args: &[Value]| -> Result<Value, TemplateError> {
            let input: usize = args.iter().map(|a| measure(a).0).sum();
            budget.step(1 + extra + (input / 4096) as u64)?;
            let out = f(args).map_err(|msg| budget.fail(format!("{name}: {msg}")))?;
            let (size, depth) = measure(&out);
            if size > MAX_VALUE_BYTES {
                return Err(budget.fail(format!("{name}: result exceeds {MAX_VALUE_BYTES} bytes")));
            }
            if depth > MAX_VALUE_DEPTH {
                return Err(budget.fail(format!(
                    "{name}: result nests deeper than {MAX_VALUE_DEPTH} levels"
                )));
            }
            if let Value::List(l) = &out
                && l.len() > MAX_LIST_LEN
            {
                return Err(
                    budget.fail(format!("{name}: result has more than {MAX_LIST_LEN} items"))
                );
            }
            budget.alloc(size)?;
            Ok(out)
        }),
    );
}

/// Bytes (strings' lengths plus 16 per item or entry) and nesting depth of `v`. Stops
/// descending past [`MAX_VALUE_DEPTH`] + 1 levels, so it cannot recurse deeper than that.
pub(crate) fn measure(v: &Value) -> (usize, usize) {
    fn go(v: &Value, level: usize) -> (usize, usize) {
        if level > MAX_VALUE_DEPTH + 1 {
            return (0, level);
        }
        match v {
            Value::String(t) => (t.len(), level),
            Value::List(l) => l.iter().fold((16, level + 1), |(n, d), x| {
                let (xn, xd) = go(x, level + 1);
                (n + 16 + xn, d.max(xd))
            }),
            Value::Map(m) => m.iter().fold((16, level + 1), |(n, d), (k, x)| {
                let (xn, xd) = go(x, level + 1);
                (n + 16 + k.len() + xn, d.max(xd))
            }),
            _ => (16, level),
        }
    }
    go(v, 0)
}

// ---- argument helpers ----

fn s(t: impl Into<String>) -> Value {
    Value::String(Arc::from(t.into()))
}

fn list(items: Vec<Value>) -> Value {
    Value::List(items.into())
}

fn map(entries: BTreeMap<Arc<str>, Value>) -> Value {
    Value::Map(Arc::new(entries))
}

fn arg(a: &[Value], i: usize) -> Result<&Value, String> {
    a.get(i)
        .ok_or_else(|| format!("missing argument {}", i + 1))
}

/// Sprig's `strval`: a string as it is, anything else as Go's `%v` prints it.
fn strval(v: &Value) -> String {
    match v {
        Value::String(t) => t.to_string(),
        other => other.to_string(),
    }
}

fn str_arg(a: &[Value], i: usize) -> Result<String, String> {
    arg(a, i).map(strval)
}

fn bytes_arg(a: &[Value], i: usize) -> Result<Vec<u8>, String> {
    arg(a, i).map(|v| uncarry_bytes(&strval(v)))
}

fn int_arg(a: &[Value], i: usize) -> Result<i64, String> {
    arg(a, i).map(to_int)
}

fn list_arg(a: &[Value], i: usize) -> Result<&[Value], String> {
    match arg(a, i)? {
        Value::List(l) => Ok(l),
        Value::Nil => Ok(&[]),
        _ => Err(format!("argument {} must be a list", i + 1)),
    }
}

fn dict_arg(a: &[Value], i: usize) -> Result<&BTreeMap<Arc<str>, Value>, String> {
    match arg(a, i)? {
        Value::Map(m) => Ok(m),
        _ => Err(format!("argument {} must be a dict", i + 1)),
    }
}

/// Sprig's `toInt64`: numbers truncated, strings parsed (0 when they are not numbers), bools
/// 1 or 0.
fn to_int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::Uint(n) => *n as i64,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::String(t) => t
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| t.trim().parse::<f64>().ok().map(|f| f as i64))
            .unwrap_or(0),
        _ => 0,
    }
}

fn to_float(v: &Value) -> f64 {
    match v {
        Value::Int(n) => *n as f64,
        Value::Uint(n) => *n as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(t) => t.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Sprig's `empty`: nil, false, 0, "" and empty lists and dicts.
fn empty(v: &Value) -> bool {
    !v.is_truthy()
}

fn fits(bytes: usize) -> Result<(), String> {
    if bytes > MAX_VALUE_BYTES {
        return Err(format!("result would exceed {MAX_VALUE_BYTES} bytes"));
    }
    Ok(())
}

// ---- Go builtins ----

/// An upper bound of the length of `v` as `%v` prints it.
fn printed_len(v: &Value) -> usize {
    match v {
        Value::String(t) => t.len(),
        other => measure(other).0 * 2,
    }
}

/// Go's `fmt.Sprint`: operands joined, with a space between two that are not strings.
fn sprint(a: &[Value]) -> Result<String, String> {
    fits(a.iter().map(|v| printed_len(v) + 1).sum())?;
    let mut out = String::new();
    for (i, v) in a.iter().enumerate() {
        let is_str = |v: &Value| matches!(v, Value::String(_));
        if i > 0 && !is_str(v) && !is_str(&a[i - 1]) {
            out.push(' ');
        }
        out.push_str(&strval(v));
    }
    Ok(out)
}

fn print(a: &[Value]) -> Result<Value, String> {
    sprint(a).map(s)
}

fn println(a: &[Value]) -> Result<Value, String> {
    fits(a.iter().map(|v| printed_len(v) + 1).sum())?;
    let parts: Vec<String> = a.iter().map(strval).collect();
    Ok(s(parts.join(" ") + "\n"))
}

/// Go's `printf`, run by gotmpl's own builtin once the result's size is known to fit: the
/// format's text, each operand printed, and each width or precision (at most 65535 each).
fn printf(a: &[Value]) -> Result<Value, String> {
    let format = match a.first() {
        Some(Value::String(f)) => f.clone(),
        _ => return Err("the first argument must be a format string".into()),
    };
    // Widths and precisions: digits in the format, or `*` (an operand), 65535 at most each.
    let widths: usize = format
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse::<usize>().ok().map(|n| n.min(65_535)))
        .sum::<usize>()
        + format.matches('*').count() * 65_535;
    // `%q`, `%x`, `% X` and `%U` print up to 4 characters per byte; the others about one.
    let mut expands = false;
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let verb = chars.find(|c| c.is_ascii_alphabetic() || *c == '%');
            expands |= matches!(verb, Some('q' | 'x' | 'X' | 'U'));
        }
    }
    let factor = if expands { 4 } else { 1 };
    let operands: usize = a[1..].iter().map(|v| printed_len(v) * factor + 16).sum();
    fits(format.len() + widths + operands)?;
    let call: String = (0..a.len())
        .map(|i| format!(" (index . {i})"))
        .collect::<String>();
    let inner = gotmpl::Template::new("printf")
        .parse(&format!("{{{{printf{call}}}}}"))
        .map_err(|_| "invalid call".to_string())?;
    inner
        .execute_to_string(&list(a.to_vec()))
        .map(s)
        .map_err(|_| "invalid format or operands".into())
}

fn slice(a: &[Value]) -> Result<Value, String> {
    let target = arg(a, 0)?;
    let idx = |i: usize| a.get(i).map(to_int);
    target
        .slice(idx(1), idx(2))
        .map_err(|_| "index out of range".into())
}

// ---- strings ----

/// Go's `strings.Title` (`upper`) or Sprig's `untitle`: the first letter of each word.
fn title(t: &str, upper: bool) -> String {
    let mut out = String::with_capacity(t.len());
    let mut at_start = true;
    for c in t.chars() {
        if at_start && c.is_alphanumeric() {
            if upper {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
        } else {
            out.push(c);
        }
        at_start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

fn floor_boundary(t: &str, mut i: usize) -> usize {
    i = i.min(t.len());
    while !t.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Sprig's `substr start end s` (byte offsets; here rounded down to a character boundary).
fn substr(a: &[Value]) -> Result<Value, String> {
    let (start, end, t) = (int_arg(a, 0)?, int_arg(a, 1)?, str_arg(a, 2)?);
    let len = t.len() as i64;
    let (from, to) = if start < 0 {
        (0, end)
    } else if end < 0 || end > len {
        (start, len)
    } else {
        (start, end)
    };
    let from = floor_boundary(&t, from.clamp(0, len) as usize);
    let to = floor_boundary(&t, to.clamp(0, len) as usize).max(from);
    Ok(s(&t[from..to]))
}

/// Sprig's `trunc n s`: the first n bytes, or with n < 0 the last -n.
fn trunc(a: &[Value]) -> Result<Value, String> {
    let (n, t) = (int_arg(a, 0)?, str_arg(a, 1)?);
    let len = t.len() as i64;
    if n < 0 && len + n > 0 {
        let from = floor_boundary(&t, (len + n) as usize);
        return Ok(s(&t[from..]));
    }
    if n >= 0 && len > n {
        return Ok(s(&t[..floor_boundary(&t, n as usize)]));
    }
    Ok(s(t))
}

/// Sprig's `indent`: every line of `t` after `n` spaces.
fn indent(n: i64, t: &str) -> Result<String, String> {
    let n = n.max(0) as usize;
    let lines = t.matches('\n').count() + 1;
    fits(t.len() + lines.saturating_mul(n))?;
    let pad = " ".repeat(n);
    Ok(format!("{pad}{}", t.replace('\n', &format!("\n{pad}"))))
}

/// Go's `%q`: a double-quoted string with Go escapes.
fn go_quote(t: &str) -> String {
    let mut out = String::with_capacity(t.len() + 2);
    out.push('"');
    for c in t.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `strings.Split`/`SplitN` (`n` pieces at most when given).
fn split(t: &str, sep: &str, n: Option<usize>) -> Result<Vec<String>, String> {
    if n == Some(0) {
        return Ok(Vec::new());
    }
    let parts: Vec<String> = if sep.is_empty() {
        let chars: Vec<String> = t.chars().map(String::from).collect();
        match n {
            Some(n) if chars.len() > n => {
                let mut head: Vec<String> = chars[..n - 1].to_vec();
                head.push(chars[n - 1..].concat());
                head
            }
            _ => chars,
        }
    } else {
        match n {
            Some(n) => t.splitn(n, sep).map(String::from).collect(),
            None => t.split(sep).map(String::from).collect(),
        }
    };
    if parts.len() > MAX_LIST_LEN {
        return Err(format!("result has more than {MAX_LIST_LEN} items"));
    }
    Ok(parts)
}

/// Sprig's `split`: a dict `_0`, `_1`, ... of the pieces.
fn indexed_dict(parts: Vec<String>) -> Value {
    map(parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| (Arc::from(format!("_{i}")), s(p)))
        .collect())
}

/// RFC 4648 base32 with padding, as Go's `base32.StdEncoding`.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut block = [0u8; 5];
        block[..chunk.len()].copy_from_slice(chunk);
        let bits = block.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                out.push(BASE32[((bits >> (35 - 5 * i)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let data = text.trim_end_matches('=');
    if !text.len().is_multiple_of(8) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 5 / 8);
    let (mut acc, mut nbits) = (0u64, 0u32);
    for c in data.bytes() {
        let v = BASE32.iter().position(|x| *x == c)? as u64;
        acc = (acc << 5) | v;
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    Some(out)
}

// ---- numbers and lists ----

/// Sprig's `untilStep`: start, start+step, ... up to (not including) stop.
fn range_list(start: i64, stop: i64, step: i64) -> Result<Value, String> {
    if step == 0 || (step > 0 && start >= stop) || (step < 0 && start <= stop) {
        return Ok(list(Vec::new()));
    }
    let count = (stop.abs_diff(start) - 1) / step.unsigned_abs() + 1;
    if count > MAX_LIST_LEN as u64 {
        return Err(format!("result would have more than {MAX_LIST_LEN} items"));
    }
    Ok(list(
        (0..count as i64)
            .map(|i| Value::Int(start + i * step))
            .collect(),
    ))
}

/// Sprig's `seq`, as bash's: `seq last`, `seq first last`, `seq first step last`; a string of
/// numbers separated by spaces.
fn seq(a: &[Value]) -> Result<Value, String> {
    let n: Vec<i64> = a.iter().map(to_int).collect();
    let (first, step, last) = match n.as_slice() {
        [] => return Ok(s("")),
        [last] => (1, if *last >= 1 { 1 } else { -1 }, *last),
        [first, last] => (*first, if last >= first { 1 } else { -1 }, *last),
        [first, step, last, ..] => (*first, *step, *last),
    };
    if step == 0 || (step > 0 && first > last) || (step < 0 && first < last) {
        return Ok(s(""));
    }
    let end = if step > 0 {
        last.saturating_add(1)
    } else {
        last.saturating_sub(1)
    };
    let Value::List(items) = range_list(first, end, step)? else {
        return Ok(s(""));
    };
    let parts: Vec<String> = items.iter().map(strval).collect();
    Ok(s(parts.join(" ")))
}

fn append(a: &[Value]) -> Result<Value, String> {
    let mut items = list_arg(a, 0)?.to_vec();
    items.push(arg(a, 1)?.clone());
    Ok(list(items))
}

fn uniq(a: &[Value]) -> Result<Value, String> {
    let mut out: Vec<Value> = Vec::new();
    for v in list_arg(a, 0)? {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(list(out))
}

fn without(a: &[Value]) -> Result<Value, String> {
    let drop = &a[1.min(a.len())..];
    Ok(list(
        list_arg(a, 0)?
            .iter()
            .filter(|v| !drop.contains(v))
            .cloned()
            .collect(),
    ))
}

fn compact(a: &[Value]) -> Result<Value, String> {
    Ok(list(
        list_arg(a, 0)?
            .iter()
            .filter(|v| !empty(v))
            .cloned()
            .collect(),
    ))
}

// ---- dicts ----

fn dict(a: &[Value]) -> Result<Value, String> {
    let mut d = BTreeMap::new();
    for pair in a.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_else(|| s(""));
        d.insert(Arc::from(strval(&pair[0])), v);
    }
    Ok(map(d))
}

/// Sprig's `merge` (the first dict wins, deep) or `mergeOverwrite` (later dicts win).
fn merge(a: &[Value], overwrite: bool) -> Result<Value, String> {
    fn deep(dst: &mut BTreeMap<Arc<str>, Value>, src: &BTreeMap<Arc<str>, Value>, over: bool) {
        for (k, v) in src {
            match (dst.get_mut(k), v) {
                (Some(Value::Map(d)), Value::Map(sv)) => {
                    let mut inner = (**d).clone();
                    deep(&mut inner, sv, over);
                    *d = Arc::new(inner);
                }
                (Some(existing), _) => {
                    if over || empty(existing) {
                        *existing = v.clone();
                    }
                }
                (None, _) => {
                    dst.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let mut out = dict_arg(a, 0)?.clone();
    for i in 1..a.len() {
        deep(&mut out, dict_arg(a, i)?, overwrite);
    }
    Ok(map(out))
}

/// Sprig's `dig k1 k2 ... default dict`.
fn dig(a: &[Value]) -> Result<Value, String> {
    if a.len() < 3 {
        return Err("needs keys, a default and a dict".into());
    }
    let (keys, default, mut cur) = (&a[..a.len() - 2], &a[a.len() - 2], &a[a.len() - 1]);
    for k in keys {
        match cur {
            Value::Map(m) => match m.get(strval(k).as_str()) {
                Some(v) => cur = v,
                None => return Ok(default.clone()),
            },
            _ => return Ok(default.clone()),
        }
    }
    Ok(cur.clone())
}

// ---- JSON and YAML ----

/// A template value as JSON: whole floats become integers, as Go's encoder prints them.
fn to_serde(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil | Value::Function(_) => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(n) => J::from(*n),
        Value::Uint(n) => J::from(*n),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => J::from(*f as i64),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(t) => J::String(t.to_string()),
        Value::List(l) => J::Array(l.iter().map(to_serde).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.to_string(), to_serde(v)))
                .collect(),
        ),
    }
}

/// JSON as Go decodes it into `interface{}`: numbers are float64.
fn from_serde(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        J::String(t) => s(t),
        J::Array(a) => list(a.into_iter().map(from_serde).collect()),
        J::Object(o) => map(o
            .into_iter()
            .map(|(k, v)| (Arc::from(k), from_serde(v)))
            .collect()),
    }
}

fn from_json(a: &[Value]) -> Result<Value, String> {
    let t = str_arg(a, 0)?;
    crate::controller::build::check_json_bounds("fromJson", &t)
        .map_err(|_| format!("input is over {MAX_VALUE_BYTES} bytes or nests too deep"))?;
    serde_json::from_str::<serde_json::Value>(&t)
        .map(from_serde)
        .map_err(|_| "input is not JSON".into())
}

/// Go's `json.Marshal` (`html`: with `<`, `>`, `&`, U+2028 and U+2029 escaped, as Go does
/// unless told not to) or `MarshalIndent` with two spaces.
fn to_json(a: &[Value], pretty: bool, html: bool) -> Result<Value, String> {
    let v = to_serde(arg(a, 0)?);
    let out = if pretty {
        serde_json::to_string_pretty(&v)
    } else {
        serde_json::to_string(&v)
    }
    .map_err(|_| "cannot encode".to_string())?;
    if !html {
        return Ok(s(out));
    }
    let mut escaped = String::with_capacity(out.len());
    for c in out.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            c => escaped.push(c),
        }
    }
    Ok(s(escaped))
}

/// ESO's `toYaml`: the value as YAML (keys sorted), without the final newline.
fn to_yaml(a: &[Value]) -> Result<Value, String> {
    let out = serde_yaml::to_string(&to_serde(arg(a, 0)?)).unwrap_or_default();
    Ok(s(out.strip_suffix('\n').unwrap_or(&out)))
}

/// ESO's `fromYaml`: a YAML mapping as a dict (aliases expanded within the same bound as SOPS
/// documents).
fn from_yaml(a: &[Value]) -> Result<Value, String> {
    use crate::sops::tree::Node;
    fn conv(n: Node) -> Value {
        match n {
            Node::Map(entries) => map(entries
                .into_iter()
                .map(|(k, v)| (Arc::from(k), conv(v)))
                .collect()),
            Node::List(items) => list(items.into_iter().map(conv).collect()),
            Node::Str(t) => s(t),
            Node::Int(i) => Value::Int(i),
            Node::Float(f) => Value::Float(f),
            Node::Bool(b) => Value::Bool(b),
            Node::Null => Value::Nil,
        }
    }
    let t = str_arg(a, 0)?;
    let entries = crate::sops::tree::parse_yaml(t.as_bytes()).map_err(|e| e.to_string())?;
    Ok(conv(Node::Map(entries)))
}

// ---- regular expressions ----

fn regex(a: &[Value], i: usize) -> Result<Arc<regex::Regex>, String> {
    crate::regexes::compile(&str_arg(a, i)?).map_err(|_| "invalid regular expression".into())
}

fn regex_find(a: &[Value]) -> Result<Value, String> {
    let (re, t) = (regex(a, 0)?, str_arg(a, 1)?);
    Ok(s(re.find(&t).map(|m| m.as_str()).unwrap_or("")))
}

fn regex_find_all(a: &[Value]) -> Result<Value, String> {
    let (re, t, n) = (regex(a, 0)?, str_arg(a, 1)?, int_arg(a, 2)?);
    let limit = if n < 0 { MAX_LIST_LEN + 1 } else { n as usize };
    Ok(list(
        re.find_iter(&t)
            .take(limit)
            .map(|m| s(m.as_str()))
            .collect(),
    ))
}

fn regex_split(a: &[Value]) -> Result<Value, String> {
    let (re, t, n) = (regex(a, 0)?, str_arg(a, 1)?, int_arg(a, 2)?);
    let parts: Vec<Value> = if n < 0 {
        re.split(&t).take(MAX_LIST_LEN + 1).map(s).collect()
    } else {
        re.splitn(&t, n as usize).map(s).collect()
    };
    Ok(list(parts))
}

/// Sprig's `regexReplaceAll regex s repl` (`$1`, `${name}` expanded unless `literal`), its
/// output bounded as it is built.
fn regex_replace(a: &[Value], literal: bool) -> Result<Value, String> {
    let (re, t, repl) = (regex(a, 0)?, str_arg(a, 1)?, str_arg(a, 2)?);
    let mut out = String::new();
    let mut last = 0;
    for caps in re.captures_iter(&t) {
        let Some(m) = caps.get(0) else { continue };
        out.push_str(&t[last..m.start()]);
        if literal {
            out.push_str(&repl);
        } else {
            caps.expand(&repl, &mut out);
        }
        last = m.end();
        fits(out.len())?;
    }
    out.push_str(&t[last..]);
    fits(out.len())?;
    Ok(s(out))
}

// ---- types and paths ----

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "invalid",
        Value::List(_) => "slice",
        Value::Map(_) => "map",
        Value::Function(_) => "func",
        other => type_of(other),
    }
}

/// Go's `path.Base`.
fn path_base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Go's `path.Dir` for the usual cases (no `..` or `//` cleaning).
fn path_dir(p: &str) -> String {
    match p.rfind('/') {
        None => ".".into(),
        Some(0) => "/".into(),
        Some(i) => p[..i].trim_end_matches('/').to_string(),
    }
}

// ---- ESO's PEM functions ----

/// ESO's `filterPEM type input`: the PEM blocks of `type` (case-insensitive), re-encoded, in
/// order. Errors when the input has no PEM block at all.
fn filter_pem(a: &[Value]) -> Result<Value, String> {
    let (kind, input) = (str_arg(a, 0)?, str_arg(a, 1)?);
    let blocks = pem::parse_many(input.as_bytes()).map_err(|_| "input is not PEM")?;
    if blocks.is_empty() && !input.trim().is_empty() {
        return Err("error filtering pem: found junk".into());
    }
    let keep: Vec<pem::Pem> = blocks
        .into_iter()
        .filter(|b| b.tag().eq_ignore_ascii_case(&kind))
        .collect();
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Ok(s(keep
        .iter()
        .map(|b| pem::encode_config(b, config))
        .collect::<String>()))
}
