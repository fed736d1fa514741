//! Markdown to HTML for the inbox, sanitised: whatever a template author writes, no script,
//! event handler, `javascript:` link or raw HTML reaches the app's web view.

use pulldown_cmark::{Options, Parser, html};

pub fn to_safe_html(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    );
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, parser);
    ammonia::clean(&unsafe_html)
}

#[cfg(test)]
mod tests {
    use super::to_safe_html;

    #[test]
    fn markdown_becomes_html() {
        let html = to_safe_html("# Hello\n\nPlease **read** [the policy](https://example.com/p).");
        assert!(html.contains("<h1>Hello</h1>"));
        assert!(html.contains("<strong>read</strong>"));
        assert!(html.contains(r#"href="https://example.com/p""#));
    }

    #[test]
    fn no_script_or_raw_html_survives() {
        for attack in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[click](javascript:alert(1))",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<iframe src=\"https://evil.example\"></iframe>",
            "<div style=\"position:fixed\" onclick=\"steal()\">x</div>",
            "<svg><script>alert(1)</script></svg>",
        ] {
            let html = to_safe_html(attack).to_lowercase();
            for forbidden in [
                "<script",
                "onerror",
                "javascript:",
                "<iframe",
                "onclick",
                "style=",
            ] {
                assert!(
                    !html.contains(forbidden),
                    "{attack:?} rendered as {html:?}, which contains {forbidden:?}"
                );
            }
        }
    }
}
