//! Small text helpers shared by the services: field validation and money display.

/// Checks a text field's length (in characters) and that it has no control characters; the
/// message names the field.
pub fn check(name: &str, value: &str, min: usize, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(if min == 0 {
            format!("{name} must be at most {max} characters")
        } else {
            format!("{name} must be {min} to {max} characters")
        });
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{name} must not contain control characters"));
    }
    Ok(())
}

/// A currency code: three upper-case ASCII letters.
pub fn check_currency(value: &str) -> Result<(), String> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err("currency must be a three-letter code such as EUR".into())
    }
}

/// `€14.50` for EUR; `14.50 USD` for other codes.
pub fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let amount = format!("{}.{:02}", abs / 100, abs % 100);
    match currency {
        "EUR" => format!("{sign}€{amount}"),
        "USD" => format!("{sign}${amount}"),
        "GBP" => format!("{sign}£{amount}"),
        other => format!("{sign}{amount} {other}"),
    }
}

/// The first `max` characters of `value`.
pub fn truncate(value: &str, max: usize) -> String {
    value.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_formats() {
        assert_eq!(money(1450, "EUR"), "€14.50");
        assert_eq!(money(5, "EUR"), "€0.05");
        assert_eq!(money(123_456, "CHF"), "1234.56 CHF");
        assert_eq!(money(-100, "USD"), "-$1.00");
    }

    #[test]
    fn checks() {
        assert!(check("city", "Zürich", 0, 100).is_ok());
        assert_eq!(
            check("firstName", "", 1, 100).unwrap_err(),
            "firstName must be 1 to 100 characters"
        );
        assert!(check("x", "a\u{0}b", 0, 10).is_err());
        assert!(check_currency("EUR").is_ok());
        assert!(check_currency("eur").is_err());
        assert_eq!(truncate("héllo", 2), "hé");
    }
}
