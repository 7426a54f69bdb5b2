//! Shamir secret sharing over GF(2^8) as sops uses it for several key groups
//! (`shamir/shamir.go`, from HashiCorp Vault): each share is the y bytes of every secret byte
//! followed by one x byte; the secret is the polynomial's value at x = 0, found by Lagrange
//! interpolation. The field is AES's: `GF(2)[X] / (X^8 + X^4 + X^3 + X + 1)`.

use zeroize::Zeroizing;

/// Multiplication in GF(2^8), without data-dependent branches.
fn mul(a: u8, b: u8) -> u8 {
    let mut acc: u8 = 0;
    for i in (0..8).rev() {
        let bit = (b >> i) & 1;
        let a_or_zero = 0u8.wrapping_sub(bit) & a;
        let reduce = 0u8.wrapping_sub(acc >> 7) & 0x1b;
        acc = a_or_zero ^ (reduce ^ acc.wrapping_add(acc));
    }
    acc
}

/// Multiplicative inverse in GF(2^8): a^254 (a^-1 = a^(2^8 - 2)); 0 maps to 0.
fn inverse(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut exp = 254u8;
    while exp > 0 {
        if exp & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    result
}

/// Why shares do not combine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// Fewer than two shares (`shamir.go`: Combine).
    #[error("less than two shares cannot reconstruct the secret")]
    TooFew,
    /// A share shorter than two bytes.
    #[error("shares must be at least two bytes")]
    TooShort,
    /// Shares of different lengths.
    #[error("shares differ in length")]
    LengthMismatch,
    /// Two shares with the same x coordinate (a share repeated).
    #[error("duplicate share (same x coordinate)")]
    Duplicate,
}

/// Reconstructs the secret from `shares` (each `y_1 .. y_n, x`); the result is one byte shorter
/// than a share. Errors as in `shamir/shamir.go`'s `Combine`.
pub fn combine(shares: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    if shares.len() < 2 {
        return Err(ShamirError::TooFew);
    }
    let len = shares[0].len();
    if len < 2 {
        return Err(ShamirError::TooShort);
    }
    if shares.iter().any(|s| s.len() != len) {
        return Err(ShamirError::LengthMismatch);
    }
    let xs: Vec<u8> = shares.iter().map(|s| s[len - 1]).collect();
    for (i, x) in xs.iter().enumerate() {
        if xs[..i].contains(x) {
            return Err(ShamirError::Duplicate);
        }
    }
    // Lagrange basis at 0 for each share: prod_{j != i} x_j / (x_i + x_j) (subtraction is XOR).
    let basis: Vec<u8> = (0..xs.len())
        .map(|i| {
            (0..xs.len())
                .filter(|j| *j != i)
                .fold(1u8, |acc, j| mul(acc, mul(xs[j], inverse(xs[i] ^ xs[j]))))
        })
        .collect();
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    for (idx, out) in secret.iter_mut().enumerate() {
        *out = shares
            .iter()
            .zip(&basis)
            .fold(0u8, |acc, (share, b)| acc ^ mul(share[idx], *b));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates the polynomial with `coefficients` (constant first) at `x` in GF(2^8): the
    /// test-side split, so that shares with known secrets can be made.
    fn eval(coefficients: &[u8], x: u8) -> u8 {
        coefficients
            .iter()
            .rev()
            .fold(0u8, |acc, c| mul(acc, x) ^ *c)
    }

    fn split(secret: &[u8], higher: &[&[u8]], xs: &[u8]) -> Vec<Vec<u8>> {
        xs.iter()
            .map(|x| {
                let mut share: Vec<u8> = secret
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let mut coeffs = vec![*s];
                        coeffs.extend(higher.iter().map(|h| h[i]));
                        eval(&coeffs, *x)
                    })
                    .collect();
                share.push(*x);
                share
            })
            .collect()
    }

    #[test]
    fn field_arithmetic() {
        // Known AES field facts: 0x53 * 0xCA = 1; 0x57 * 0x83 = 0xC1 (FIPS-197 §4.2).
        assert_eq!(mul(0x53, 0xca), 1);
        assert_eq!(mul(0x57, 0x83), 0xc1);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inverse(a)), 1, "inverse of {a}");
        }
    }

    #[test]
    fn combine_threshold_two_of_three() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let coeff = b"zyxwvutsrqponmlkjihgfedcba987654";
        let shares = split(secret, &[coeff], &[1, 2, 3]);
        for pair in [[0, 1], [0, 2], [1, 2], [2, 0]] {
            let got = combine(&[&shares[pair[0]], &shares[pair[1]]]).unwrap();
            assert_eq!(got.as_slice(), secret, "{pair:?}");
        }
        let all: Vec<&[u8]> = shares.iter().map(|s| s.as_slice()).collect();
        assert_eq!(combine(&all).unwrap().as_slice(), secret);
    }

    #[test]
    fn combine_threshold_three_needs_three() {
        let secret = [7u8; 32];
        let c1 = [1u8; 32];
        let c2 = [200u8; 32];
        let shares = split(&secret, &[&c1, &c2], &[4, 9, 250]);
        let all: Vec<&[u8]> = shares.iter().map(|s| s.as_slice()).collect();
        assert_eq!(combine(&all).unwrap().as_slice(), &secret);
        // Two of three shares of a degree-2 polynomial give a wrong value, not the secret.
        assert_ne!(combine(&all[..2]).unwrap().as_slice(), &secret);
    }

    /// A fixture made by sops's own Go `shamir.Split` would need Go; instead this pins the byte
    /// layout: y bytes first, the x coordinate last.
    #[test]
    fn share_layout_is_y_then_x() {
        let secret = [42u8];
        let shares = split(&secret, &[&[5u8]], &[1, 2]);
        assert_eq!(shares[0], vec![42 ^ 5, 1]);
        assert_eq!(shares[1], vec![42 ^ mul(5, 2), 2]);
        assert_eq!(
            combine(&[&shares[0], &shares[1]]).unwrap().as_slice(),
            &secret
        );
    }

    #[test]
    fn combine_errors() {
        assert_eq!(combine(&[b"ab"]), Err(ShamirError::TooFew));
        assert_eq!(combine(&[b"a", b"b"]), Err(ShamirError::TooShort));
        assert_eq!(combine(&[b"ab", b"abc"]), Err(ShamirError::LengthMismatch));
        assert_eq!(combine(&[b"a\x01", b"b\x01"]), Err(ShamirError::Duplicate));
    }
}
