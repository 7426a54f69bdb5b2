//! ESO's Password generator (`generators.external-secrets.io` `Password`), which uses
//! `github.com/sethvargo/go-password`: `length` characters of which `digits` are digits,
//! `symbols` are symbols and the rest letters, each inserted at a random position; without
//! `allowRepeat` no character occurs twice. Randomness: `rand`'s thread-local CSPRNG
//! (ChaCha, seeded from the OS), as go-password uses `crypto/rand`.

use rand::RngExt;
use zeroize::Zeroizing;

use crate::api::generators::PasswordSpec;

/// ESO's default `length`.
pub const DEFAULT_LENGTH: u32 = 24;
/// ESO's (go-password's) default `symbolCharacters`.
pub const DEFAULT_SYMBOLS: &str = "~!@#$%^&*()_+`-={}|[]\\:\"<>?,./";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
/// Longest password made: a bound on a tenant's `length` (ESO has none; 4096 characters are
/// far beyond any password rule).
pub const MAX_LENGTH: u32 = 4096;

/// A generator spec that cannot be satisfied; the message is go-password's rule, naming the
/// numbers (never a generated value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password generator: {0}")]
pub struct PasswordError(pub String);

/// What a spec asks for, ESO's defaults applied.
struct Plan {
    letters: usize,
    digits: usize,
    symbols: usize,
    letter_set: Vec<char>,
    symbol_set: Vec<char>,
}

/// The counts of each class a spec asks for and the sets to draw from, ESO's defaults
/// applied. Errors: go-password's
/// `ErrExceedsTotalLength`, `Err{Letters,Digits,Symbols}ExceedsAvailable` (without
/// `allowRepeat`), an empty symbol set asked for symbols, `length` over [`MAX_LENGTH`].
fn plan(spec: &PasswordSpec) -> Result<Plan, PasswordError> {
    let length = spec.length.unwrap_or(DEFAULT_LENGTH);
    if length > MAX_LENGTH {
        return Err(PasswordError(format!(
            "length {length} is over the limit of {MAX_LENGTH}"
        )));
    }
    // ESO: `int(float32(length) * 0.25)` for each of digits and symbols when not set.
    let quarter = length / 4;
    let digits = spec.digits.unwrap_or(quarter);
    let symbols = spec.symbols.unwrap_or(quarter);
    let letters = length
        .checked_sub(digits.saturating_add(symbols))
        .ok_or_else(|| {
            PasswordError(format!(
                "digits ({digits}) and symbols ({symbols}) exceed the length ({length})"
            ))
        })?;
    let mut letter_set: Vec<char> = LOWER.chars().collect();
    if !spec.no_upper {
        letter_set.extend(UPPER.chars());
    }
    let symbol_set: Vec<char> = spec
        .symbol_characters
        .as_deref()
        .unwrap_or(DEFAULT_SYMBOLS)
        .chars()
        .collect();
    if symbols > 0 && symbol_set.is_empty() {
        return Err(PasswordError(
            "symbols are asked for but symbolCharacters is empty".into(),
        ));
    }
    if !spec.allow_repeat {
        let distinct = |set: &[char]| {
            let mut s = set.to_vec();
            s.sort_unstable();
            s.dedup();
            s.len()
        };
        for (class, wanted, available) in [
            ("letters", letters, distinct(&letter_set)),
            ("digits", digits, DIGITS.len()),
            ("symbols", symbols, distinct(&symbol_set)),
        ] {
            if wanted as usize > available {
                return Err(PasswordError(format!(
                    "{wanted} {class} without repeats, but only {available} are available (allowRepeat: true lifts this)"
                )));
            }
        }
    }
    Ok(Plan {
        letters: letters as usize,
        digits: digits as usize,
        symbols: symbols as usize,
        letter_set,
        symbol_set,
    })
}

/// Checks `spec` as [`generate`] would, without generating.
pub fn validate(spec: &PasswordSpec) -> Result<(), PasswordError> {
    plan(spec).map(|_| ())
}

/// A new password for `spec` (ESO's `Password` generator, output key `password`). Letters,
/// then digits, then symbols are each inserted at a uniformly random position of the password
/// so far, as go-password does; without `allowRepeat` a class draws only characters not yet
/// in the password (so a `symbolCharacters` that overlaps the letters cannot loop, as it can
/// in go-password: it fails when too few remain). Errors: see [`validate`].
pub fn generate(spec: &PasswordSpec) -> Result<Zeroizing<String>, PasswordError> {
    let Plan {
        letters,
        digits,
        symbols,
        letter_set,
        symbol_set,
    } = plan(spec)?;
    let digit_set: Vec<char> = DIGITS.chars().collect();
    let mut rng = rand::rng();
    let mut out: Zeroizing<Vec<char>> =
        Zeroizing::new(Vec::with_capacity(letters + digits + symbols));
    for (count, set) in [
        (letters, &letter_set),
        (digits, &digit_set),
        (symbols, &symbol_set),
    ] {
        for _ in 0..count {
            let choices: Vec<char> = if spec.allow_repeat {
                set.clone()
            } else {
                set.iter().copied().filter(|c| !out.contains(c)).collect()
            };
            if choices.is_empty() {
                return Err(PasswordError(
                    "symbolCharacters overlap the letters or digits: too few distinct characters remain without repeats".into(),
                ));
            }
            let c = choices[rng.random_range(0..choices.len())];
            let at = rng.random_range(0..=out.len());
            out.insert(at, c);
        }
    }
    Ok(Zeroizing::new(out.iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PasswordSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn count(p: &str, set: &str) -> usize {
        p.chars().filter(|c| set.contains(*c)).count()
    }

    #[test]
    fn defaults_are_esos_24_characters_a_quarter_digits_a_quarter_symbols_no_repeats() {
        for _ in 0..200 {
            let p = generate(&spec("{}")).unwrap();
            assert_eq!(p.chars().count(), 24);
            assert_eq!(count(&p, DIGITS), 6);
            assert_eq!(count(&p, DEFAULT_SYMBOLS), 6);
            assert_eq!(count(&p, LOWER) + count(&p, UPPER), 12);
            let mut chars: Vec<char> = p.chars().collect();
            chars.sort_unstable();
            chars.dedup();
            assert_eq!(chars.len(), 24, "a character repeats");
        }
    }

    #[test]
    fn counts_no_upper_and_custom_symbols_are_honoured() {
        let s = spec(
            "{length: 40, digits: 5, symbols: 3, symbolCharacters: '-_', allowRepeat: true, noUpper: true}",
        );
        for _ in 0..200 {
            let p = generate(&s).unwrap();
            assert_eq!(p.chars().count(), 40);
            assert_eq!(count(&p, DIGITS), 5);
            assert_eq!(count(&p, "-_"), 3);
            assert_eq!(count(&p, LOWER), 32);
            assert_eq!(count(&p, UPPER), 0);
        }
    }

    #[test]
    fn zero_digits_and_symbols_give_letters_only() {
        let p = generate(&spec("{length: 10, digits: 0, symbols: 0}")).unwrap();
        assert!(p.chars().all(|c| c.is_ascii_alphabetic()), "{}", p.len());
        assert_eq!(p.len(), 10);
    }

    #[test]
    fn positions_are_random_not_grouped_by_class() {
        // Over many passwords the first character is sometimes a digit, sometimes a symbol.
        let s = spec("{length: 8, digits: 4, symbols: 2}");
        let firsts: Vec<char> = (0..300)
            .map(|_| generate(&s).unwrap().chars().next().unwrap())
            .collect();
        assert!(firsts.iter().any(|c| c.is_ascii_digit()));
        assert!(firsts.iter().any(|c| DEFAULT_SYMBOLS.contains(*c)));
        assert!(firsts.iter().any(|c| c.is_ascii_alphabetic()));
    }

    #[test]
    fn impossible_specs_are_refused_with_go_passwords_rules() {
        let err = |y: &str| generate(&spec(y)).unwrap_err().to_string();
        assert_eq!(
            err("{length: 4, digits: 3, symbols: 2}"),
            "password generator: digits (3) and symbols (2) exceed the length (4)"
        );
        assert!(
            err("{length: 12, digits: 11, symbols: 0}")
                .contains("11 digits without repeats, but only 10")
        );
        assert!(err("{length: 60, digits: 0, symbols: 0, noUpper: true}").contains("60 letters"));
        assert!(
            err("{length: 5, digits: 0, symbols: 3, symbolCharacters: '!!'}").contains("3 symbols")
        );
        assert!(
            err("{length: 5, digits: 0, symbols: 1, symbolCharacters: ''}")
                .contains("symbolCharacters is empty")
        );
        assert!(err("{length: 100000}").contains("over the limit"));
        // With repeats allowed the same counts are fine.
        assert_eq!(
            generate(&spec(
                "{length: 12, digits: 11, symbols: 0, allowRepeat: true}"
            ))
            .unwrap()
            .len(),
            12
        );
    }

    #[test]
    fn overlapping_symbol_characters_fail_instead_of_looping() {
        let s = spec("{length: 3, digits: 0, symbols: 2, symbolCharacters: 'ab', noUpper: true}");
        // Letters may take `a` and `b` first; then no distinct symbol remains. Never a loop.
        for _ in 0..100 {
            if let Ok(p) = generate(&s) {
                assert_eq!(p.len(), 3);
            }
        }
    }
}
