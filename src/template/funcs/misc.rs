//! Sprig's random (`randAlphaNum`, `randAlpha`, `randNumeric`, `randAscii`, `randBytes`,
//! `randInt`, `shuffle`, `uuidv4`), semver (`semver`, `semverCompare`), URL (`urlParse`,
//! `urlJoin`), float math (`addf`, `add1f`, `subf`, `mulf`, `divf`, `maxf`, `minf`, `ceil`,
//! `floor`, `round`, `toDecimal`), case (`camelcase`, `snakecase`, `kebabcase`), `wrap`,
//! `wrapWith`, `chunk`, `deepEqual`, `abbrevboth`, `hello`, `encryptAES`, `decryptAES` and
//! path (`clean`, `os*`) functions, as ESO's copy of
//! Sprig defines them. Random output changes at every render: a template using one rewrites
//! its Secret at every refresh, as in ESO.

use std::collections::BTreeMap;

use gotmpl::Value;
use rand::{RngExt, seq::SliceRandom};

use super::*;

/// The functions of this module, for the registry.
pub(super) const TABLE: &[(&str, Fun)] = &[
    ("randAlphaNum", |a| {
        random_chars(
            a,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        )
    }),
    ("randAlpha", |a| {
        random_chars(a, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    }),
    ("randNumeric", |a| random_chars(a, b"0123456789")),
    ("randAscii", |a| {
        let printable: Vec<u8> = (32u8..=126).collect();
        random_chars(a, &printable)
    }),
    ("randBytes", |a| {
        let n = int_arg(a, 0)?.max(0) as usize;
        fits(n.saturating_mul(2))?;
        let mut bytes = vec![0u8; n];
        rand::fill(&mut bytes[..]);
        Ok(s(base64::engine::general_purpose::STANDARD.encode(bytes)))
    }),
    ("randInt", |a| {
        let (min, max) = (int_arg(a, 0)?, int_arg(a, 1)?);
        if max <= min {
            return Err("max must be greater than min".into());
        }
        Ok(Value::Int(rand::rng().random_range(min..max)))
    }),
    ("shuffle", |a| {
        let mut chars: Vec<char> = str_arg(a, 0)?.chars().collect();
        chars.shuffle(&mut rand::rng());
        Ok(s(chars.into_iter().collect::<String>()))
    }),
    ("uuidv4", |_| Ok(s(uuid::Uuid::new_v4().to_string()))),
    ("semver", |a| {
        let text = str_arg(a, 0)?;
        let v = parse_version(&text)?;
        let mut m = BTreeMap::new();
        m.insert("Major".into(), Value::Int(v.major as i64));
        m.insert("Minor".into(), Value::Int(v.minor as i64));
        m.insert("Patch".into(), Value::Int(v.patch as i64));
        m.insert("Prerelease".into(), s(v.pre.as_str()));
        m.insert("Metadata".into(), s(v.build.as_str()));
        m.insert("Original".into(), s(text));
        Ok(map(m))
    }),
    ("semverCompare", |a| {
        let (constraint, version) = (str_arg(a, 0)?, str_arg(a, 1)?);
        let v = parse_version(&version)?;
        Ok(Value::Bool(semver_matches(&constraint, &v)?))
    }),
    ("urlParse", url_parse),
    ("urlJoin", url_join),
    ("addf", |a| Ok(Value::Float(a.iter().map(to_float).sum()))),
    ("add1f", |a| Ok(Value::Float(to_float(arg(a, 0)?) + 1.0))),
    ("subf", |a| fold_floats(a, |x, y| x - y)),
    ("mulf", |a| {
        Ok(Value::Float(a.iter().map(to_float).product()))
    }),
    ("divf", |a| fold_floats(a, |x, y| x / y)),
    ("maxf", |a| fold_floats(a, f64::max)),
    ("minf", |a| fold_floats(a, f64::min)),
    ("ceil", |a| Ok(Value::Float(to_float(arg(a, 0)?).ceil()))),
    ("floor", |a| Ok(Value::Float(to_float(arg(a, 0)?).floor()))),
    ("round", |a| {
        // Sprig: round(x, places, roundOn = .5).
        let (x, places) = (to_float(arg(a, 0)?), int_arg(a, 1)?.clamp(0, 15) as i32);
        let round_on = a.get(2).map(to_float).unwrap_or(0.5);
        let pow = 10f64.powi(places);
        let digit = pow * x;
        let (int, frac) = (digit.trunc(), digit.fract());
        let rounded = if frac.abs() >= round_on {
            int + frac.signum()
        } else {
            int
        };
        Ok(Value::Float(rounded / pow))
    }),
    ("toDecimal", |a| {
        // Sprig: an octal string (file mode) as a number; 0 when it is not one.
        Ok(Value::Int(
            i64::from_str_radix(str_arg(a, 0)?.trim(), 8).unwrap_or(0),
        ))
    }),
    ("camelcase", |a| {
        let words = words(&str_arg(a, 0)?);
        Ok(s(words
            .iter()
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| {
                        f.to_uppercase()
                            .chain(c.flat_map(char::to_lowercase))
                            .collect::<String>()
                    })
                    .unwrap_or_default()
            })
            .collect::<String>()))
    }),
    ("snakecase", |a| Ok(s(lower_words(&str_arg(a, 0)?, "_")))),
    ("kebabcase", |a| Ok(s(lower_words(&str_arg(a, 0)?, "-")))),
    ("wrap", |a| {
        Ok(s(wrap(int_arg(a, 0)?, "\n", &str_arg(a, 1)?)))
    }),
    ("wrapWith", |a| {
        Ok(s(wrap(int_arg(a, 0)?, &str_arg(a, 1)?, &str_arg(a, 2)?)))
    }),
    ("chunk", chunk),
    ("mustChunk", chunk),
    ("mustSlice", slice),
    ("deepEqual", |a| Ok(Value::Bool(arg(a, 0)? == arg(a, 1)?))),
    ("typeIsLike", |a| {
        let (want, v) = (str_arg(a, 0)?, arg(a, 1)?);
        let t = type_of(v);
        Ok(Value::Bool(want == t || want == format!("*{t}")))
    }),
    ("hello", |_| Ok(s("Hello!"))),
    ("encryptAES", |a| {
        encrypt_aes(&str_arg(a, 0)?, &bytes_arg(a, 1)?)
    }),
    ("decryptAES", |a| {
        decrypt_aes(&str_arg(a, 0)?, &str_arg(a, 1)?)
    }),
    ("abbrevboth", |a| {
        Ok(s(abbreviate_full(
            &str_arg(a, 2)?,
            int_arg(a, 0)?,
            int_arg(a, 1)?,
        )))
    }),
    ("clean", |a| Ok(s(path_clean(&str_arg(a, 0)?)))),
    ("osClean", |a| Ok(s(path_clean(&str_arg(a, 0)?)))),
    ("osBase", |a| Ok(s(path_base(&str_arg(a, 0)?)))),
    ("osDir", |a| Ok(s(path_dir(&str_arg(a, 0)?)))),
    ("osExt", |a| {
        let p = str_arg(a, 0)?;
        let base = p.rsplit('/').next().unwrap_or("");
        Ok(s(base.rfind('.').map(|i| &base[i..]).unwrap_or("")))
    }),
    ("osIsAbs", |a| {
        Ok(Value::Bool(str_arg(a, 0)?.starts_with('/')))
    }),
];

/// `n` characters drawn from `alphabet` with the operating system's CSPRNG, as Sprig's
/// `randAlphaNum` and kin (goutils' `CryptoRandom*`).
fn random_chars(a: &[Value], alphabet: &[u8]) -> Result<Value, String> {
    let n = int_arg(a, 0)?.max(0) as usize;
    fits(n)?;
    let mut rng = rand::rng();
    let out: String = (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect();
    Ok(s(out))
}

fn fold_floats(a: &[Value], f: fn(f64, f64) -> f64) -> Result<Value, String> {
    let first = to_float(arg(a, 0)?);
    Ok(Value::Float(a[1..].iter().map(to_float).fold(first, f)))
}

/// Masterminds' semver (which Sprig uses) accepts `v1.2`, `1`, `1.2.3-rc.1+b`: missing parts
/// are 0.
fn parse_version(text: &str) -> Result<semver::Version, String> {
    let t = text.trim().trim_start_matches('v');
    let (core, tail) = match t.find(['-', '+']) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let parts = core.split('.').count();
    let padded = match parts {
        1 => format!("{core}.0.0{tail}"),
        2 => format!("{core}.0{tail}"),
        _ => t.to_string(),
    };
    semver::Version::parse(&padded).map_err(|_| "invalid semantic version".into())
}

/// Masterminds' constraint syntax over Rust's `semver::VersionReq`: `||` alternatives, each
/// of comparators separated by spaces or commas, `x`/`X`/`*` wildcards, `a - b` ranges, and a
/// bare version meaning `=` (Rust's default is `^`).
fn semver_matches(constraint: &str, v: &semver::Version) -> Result<bool, String> {
    let invalid = || "invalid semver constraint".to_string();
    for alt in constraint.split("||") {
        let alt = alt.trim();
        let tokens: Vec<&str> = alt.split([' ', ',']).filter(|t| !t.is_empty()).collect();
        let mut comparators = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            if tokens.get(i + 1) == Some(&"-") {
                let (lo, hi) = (tokens[i], tokens.get(i + 2).ok_or_else(invalid)?);
                comparators.push(format!(">={lo}"));
                comparators.push(format!("<={hi}"));
                i += 3;
                continue;
            }
            let mut t = tokens[i].replace(['x', 'X'], "*");
            // An operator written apart from its version: `>= 1.2`.
            if t.chars().all(|c| "<>=!~^".contains(c)) {
                t = format!("{t}{}", tokens.get(i + 1).ok_or_else(invalid)?);
                i += 1;
            }
            let t = t.replacen('v', "", 1);
            if t.starts_with(|c: char| c.is_ascii_digit()) && !t.contains('*') {
                comparators.push(format!("={t}"));
            } else {
                comparators.push(t);
            }
            i += 1;
        }
        let req = semver::VersionReq::parse(&comparators.join(", ")).map_err(|_| invalid())?;
        if req.matches(v) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Sprig's `urlParse`: `scheme`, `host` (with port), `hostname`, `path`, `query` (raw),
/// `opaque`, `fragment`, `userinfo`.
fn url_parse(a: &[Value]) -> Result<Value, String> {
    let u = url::Url::parse(&str_arg(a, 0)?).map_err(|_| "invalid URL".to_string())?;
    let host = u
        .host_str()
        .map(|h| match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        })
        .unwrap_or_default();
    let userinfo = match (u.username(), u.password()) {
        ("", None) => String::new(),
        (user, None) => user.to_string(),
        (user, Some(p)) => format!("{user}:{p}"),
    };
    let mut m = BTreeMap::new();
    m.insert("scheme".into(), s(u.scheme()));
    m.insert("host".into(), s(host));
    m.insert("hostname".into(), s(u.host_str().unwrap_or("")));
    let path = if u.cannot_be_a_base() { "" } else { u.path() };
    m.insert("path".into(), s(path));
    m.insert("query".into(), s(u.query().unwrap_or("")));
    m.insert(
        "opaque".into(),
        s(if u.cannot_be_a_base() { u.path() } else { "" }),
    );
    m.insert("fragment".into(), s(u.fragment().unwrap_or("")));
    m.insert("userinfo".into(), s(userinfo));
    Ok(map(m))
}

/// Sprig's `urlJoin`: the URL a dict of `urlParse`'s keys describes.
fn url_join(a: &[Value]) -> Result<Value, String> {
    let d = dict_arg(a, 0)?;
    let get = |k: &str| d.get(k).map(strval).unwrap_or_default();
    let mut out = String::new();
    if !get("scheme").is_empty() {
        out.push_str(&get("scheme"));
        out.push(':');
    }
    if !get("opaque").is_empty() {
        out.push_str(&get("opaque"));
    } else {
        if !get("host").is_empty() || !get("userinfo").is_empty() {
            out.push_str("//");
            if !get("userinfo").is_empty() {
                out.push_str(&get("userinfo"));
                out.push('@');
            }
            out.push_str(&get("host"));
        }
        let path = get("path");
        if !path.is_empty() && !path.starts_with('/') && !get("host").is_empty() {
            out.push('/');
        }
        out.push_str(&path);
    }
    if !get("query").is_empty() {
        out.push('?');
        out.push_str(&get("query"));
    }
    if !get("fragment").is_empty() {
        out.push('#');
        out.push_str(&get("fragment"));
    }
    Ok(s(out))
}

/// The words of an identifier: split at characters that are not letters or digits, at a
/// lower-to-upper change (`firstName`) and before the last capital of an acronym
/// (`HTTPServer` → `HTTP`, `Server`).
fn words(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1);
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if boundary && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn lower_words(text: &str, sep: &str) -> String {
    words(text)
        .iter()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join(sep)
}

/// goutils' `WrapCustom` as Sprig calls it: lines of at most `width` characters broken at
/// spaces, long words left whole, lines joined by `sep`.
fn wrap(width: i64, sep: &str, text: &str) -> String {
    let width = width.max(1) as usize;
    let mut lines: Vec<String> = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines.join(sep)
}

fn chunk(a: &[Value]) -> Result<Value, String> {
    let size = int_arg(a, 0)?;
    if size < 1 {
        return Err("size must be positive".into());
    }
    let items = list_arg(a, 1)?;
    Ok(list(
        items
            .chunks(size as usize)
            .map(|c| list(c.to_vec()))
            .collect(),
    ))
}

/// Go's `path.Clean`.
fn path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// goutils' `AbbreviateFull(text, offset, width)`, which Sprig's `abbrevboth left right text`
/// calls: `...` on the side(s) cut, byte offsets as Go's; "" where goutils errs (a width under
/// 4, or under 7 with an offset past 4), as Sprig drops the error.
fn abbreviate_full(text: &str, offset: i64, width: i64) -> String {
    let b = text.as_bytes();
    let len = b.len() as i64;
    let cut =
        |from: i64, to: i64| String::from_utf8_lossy(&b[from as usize..to as usize]).into_owned();
    if text.is_empty() {
        return String::new();
    }
    if width < 4 {
        return String::new();
    }
    if len <= width {
        return text.to_string();
    }
    let mut offset = offset.clamp(0, len);
    if len - offset < width - 3 {
        offset = len - (width - 3);
    }
    if offset <= 4 {
        return cut(0, width - 3) + "...";
    }
    if width < 7 {
        return String::new();
    }
    if offset + width - 3 < len {
        // Go slices bytes; a cut inside a character shows U+FFFD, never panics.
        let rest = cut(offset, len);
        return format!("...{}", abbreviate_full(&rest, 0, width - 3));
    }
    format!("...{}", cut(len - (width - 3), len))
}

/// Sprig's key: the password's bytes, cut or zero-padded to 32 (AES-256).
fn aes_key(password: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    let p = password.as_bytes();
    let n = p.len().min(32);
    key[..n].copy_from_slice(&p[..n]);
    key
}

/// Sprig's `encryptAES password plaintext`: AES-256-CBC, PKCS#7 padding, a random IV before
/// the ciphertext, base64; "" for "". A new IV at each render: the Secret changes at every
/// refresh.
fn encrypt_aes(password: &str, plaintext: &[u8]) -> Result<Value, String> {
    use cbc::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
    if plaintext.is_empty() {
        return Ok(s(""));
    }
    let mut iv = [0u8; 16];
    rand::fill(&mut iv[..]);
    let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&aes_key(password), &iv)
        .map_err(|_| "cannot encrypt")?
        .encrypt_padded_vec::<Pkcs7>(plaintext);
    let mut out = iv.to_vec();
    out.extend(ct);
    Ok(s(base64::engine::general_purpose::STANDARD.encode(out)))
}

/// Sprig's `decryptAES password ciphertext`, the inverse of [`encrypt_aes`]; "" for "".
/// Errors (fixed text, where Go may panic or return garbage): not base64, shorter than one
/// block, or a padding that does not check out (a wrong password).
fn decrypt_aes(password: &str, crypt64: &str) -> Result<Value, String> {
    use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
    if crypt64.is_empty() {
        return Ok(s(""));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(crypt64.trim())
        .map_err(|_| "input is not base64")?;
    if raw.len() < 32 || raw.len() % 16 != 0 {
        return Err("input is not AES-CBC ciphertext".into());
    }
    let (iv, ct) = raw.split_at(16);
    let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&aes_key(password), iv)
        .map_err(|_| "cannot decrypt")?
        .decrypt_padded_vec::<Pkcs7>(ct)
        .map_err(|_| "cannot decrypt: wrong password?")?;
    Ok(s(crate::template::carry_bytes(&plain)))
}
