//! The roots of a subset: the one SQL condition that picks them, and the deterministic
//! sample of them.

/// Whether a row with primary key `text` is in a sample of `percent` of the rows: decided by
/// a hash of the key, so the same rows every time, on every machine.
pub fn sampled(text: &str, percent: f64) -> bool {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap());
    ((n % 1_000_000) as f64) < percent * 10_000.0
}

/// A condition must be one SQL expression as psql sends it: no `;` ending it early, no psql
/// variable or backslash command, parentheses balanced.
pub fn check_condition(condition: &str) -> Result<(), String> {
    let mut lexer = psqlscan::Lexer::default();
    let text = format!("select 1 where ({condition}\n)");
    for line in text.split_inclusive('\n') {
        lexer.line(line.as_bytes());
    }
    if let Some(refusal) = lexer.take_refusal() {
        return Err(format!("the condition holds {}", refusal.what));
    }
    if lexer.take_statements().next().is_some() {
        return Err("the condition holds a `;`".to_string());
    }
    let statement = lexer.finish().ok_or("the condition is empty")?;
    let mut depth = 0i64;
    for token in &statement.tokens {
        if token.is_op("(") {
            depth += 1;
        } else if token.is_op(")") {
            depth -= 1;
            if depth == 0 && !std::ptr::eq(token, statement.tokens.last().unwrap()) {
                return Err("the condition closes a parenthesis it did not open".to_string());
            }
        }
    }
    match depth {
        0 => Ok(()),
        _ => Err("the condition leaves a parenthesis open".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_and_near_their_share() {
        let kept = (0..10_000).filter(|n| sampled(&n.to_string(), 5.0)).count();
        assert!((400..600).contains(&kept), "{kept}");
        assert_eq!(sampled("42", 5.0), sampled("42", 5.0));
        assert!((0..100).all(|n| sampled(&n.to_string(), 100.0)));
    }

    #[test]
    fn conditions_are_one_expression() {
        assert!(check_condition("slug = 'ams1'").is_ok());
        assert!(check_condition("name = 'a;b' and (id > 3)").is_ok());
        assert!(check_condition("true); delete from dcim_site; select (1").is_err());
        assert!(
            check_condition("true; delete").is_ok(),
            "one statement: the server refuses it"
        );
        assert!(check_condition("true) or (true")
            .unwrap_err()
            .contains("did not open"));
        assert!(check_condition("(true").unwrap_err().contains("open"));
        assert!(check_condition("id = :x").is_err());
        assert!(check_condition("true \\! rm -rf /").is_err());
        assert!(check_condition("true --").is_ok());
    }
}
