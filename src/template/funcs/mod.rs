//! The functions of ESO's engine v2: Sprig's text functions (env and expandenv left out, as ESO
//! does) and ESO's own (`toYaml`, `fromYaml`, `filterPEM`, `jwkPublicKeyPem`,
//! `jwkPrivateKeyPem`), each as Sprig or ESO documents it. Go's builtins that allocate in proportion to their input (`print`, `printf`, `println`,
//! `html`, `js`, `urlquery`, `slice`) are replaced by bounded equivalents.
//!
//! ESO's PKCS#12 functions are in `super::pkcs12`, charged as bcrypt is. Sprig's date
//! functions are in `time`, its random, semver, URL, float, case and other
//! late additions in `misc`.
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

use std::sync::Arc;

use base64::Engine as _;
use gotmpl::{FuncMap, TemplateError, Value};

use super::{Budget, MAX_LIST_LEN, MAX_VALUE_BYTES, MAX_VALUE_DEPTH, carry_bytes, uncarry_bytes};

mod args;
mod data;
mod misc;
mod text;
mod time;

use args::*;
use data::*;
use text::*;

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
    for (name, f) in table.iter().chain(time::TABLE).chain(misc::TABLE) {
        register(&mut m, budget, name, *f, 0);
    }
    // bcrypt at Go's default cost takes tens of milliseconds: a template gets ten of them.
    // So does a PKCS#12 file's key derivation (up to super::pkcs12::MAX_KDF_ITERATIONS).
    let heavy: &[(&'static str, Fun)] = &[
        ("bcrypt", bcrypt),
        ("htpasswd", htpasswd),
        ("pkcs12key", |a| {
            super::pkcs12::key_pem(&bytes_arg(a, 0)?, "").map(s)
        }),
        ("pkcs12keyPass", |a| {
            super::pkcs12::key_pem(&bytes_arg(a, 1)?, &str_arg(a, 0)?).map(s)
        }),
        ("pkcs12cert", |a| {
            super::pkcs12::cert_pem(&bytes_arg(a, 0)?, "").map(s)
        }),
        ("pkcs12certPass", |a| {
            super::pkcs12::cert_pem(&bytes_arg(a, 1)?, &str_arg(a, 0)?).map(s)
        }),
        ("pemToPkcs12", |a| {
            super::pkcs12::from_pem(&str_arg(a, 0)?, &str_arg(a, 1)?, false, "").map(s)
        }),
        ("pemToPkcs12Pass", |a| {
            super::pkcs12::from_pem(&str_arg(a, 0)?, &str_arg(a, 1)?, false, &str_arg(a, 2)?).map(s)
        }),
        ("fullPemToPkcs12", |a| {
            super::pkcs12::from_pem(&str_arg(a, 0)?, &str_arg(a, 1)?, true, "").map(s)
        }),
        ("pemTruststoreToPKCS12", |a| {
            super::pkcs12::truststore_from_pem(&str_arg(a, 0)?, "").map(s)
        }),
        ("pemTruststoreToPKCS12Pass", |a| {
            super::pkcs12::truststore_from_pem(&str_arg(a, 0)?, &str_arg(a, 1)?).map(s)
        }),
        ("fullPemToPkcs12Pass", |a| {
            super::pkcs12::from_pem(&str_arg(a, 0)?, &str_arg(a, 1)?, true, &str_arg(a, 2)?).map(s)
        }),
    ];
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
