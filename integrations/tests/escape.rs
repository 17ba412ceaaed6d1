//! Property tests of the HTML escapers the email and Telegram plugins put lead text
//! through: no markup survives, and nothing is lost (unescaping gives the input back).

use proptest::prelude::*;

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

proptest! {
    #[test]
    fn escaped_text_carries_no_markup_and_loses_nothing(
        s in prop_oneof![any::<String>(), "[<>&\"'a-z &;#0-9]{0,80}"],
    ) {
        for escaped in [
            crm_integrations::email::escape(&s),
            crm_integrations::telegram::escape(&s),
        ] {
            prop_assert!(!escaped.contains('<') && !escaped.contains('>'));
            prop_assert_eq!(unescape(&escaped), s.clone());
        }
        prop_assert!(!crm_integrations::email::escape(&s).contains('"'));
    }
}
