//! `orch prompt show KEY [--stage S]` prints what an agent would get: the
//! built-in role prompt, or the repo's own templates when it names a folder.

mod common;

use common::deployment::{Deployment, FAST};

fn show(d: &Deployment, args: &[&str]) -> (bool, String, String) {
    let out = d.orch(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prompt_show_renders_the_role_prompt_and_the_repos_override() {
    let d = Deployment::new("sqlite://orch.db", FAST, "");
    let key = d.add_item("Fix the checkout");

    let (ok, text, err) = show(&d, &["prompt", "show", &key]);
    assert!(ok, "{err}");
    assert!(text.starts_with(&format!("# {key} — Fix the checkout")), "{text}");
    assert!(text.contains("You are the **developer** for stage **development** (attempt 1)"), "{text}");
    assert!(text.contains("Your job: make the change."), "{text}");
    assert!(text.contains("This is the first attempt."), "{text}");
    assert!(text.contains("verdicts/job-1.json"), "the queued job's verdict path: {text}");

    let (ok, text, err) = show(&d, &["prompt", "show", &key, "--stage", "testing"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("You are the **tester** for stage **testing**") && text.contains("check the change"),
        "{text}"
    );

    // The repo's own folder of templates: a role's brief, and the frame.
    std::fs::create_dir_all(d.path().join("prompts")).unwrap();
    std::fs::write(d.path().join("prompts/developer.md"), "Fix {{key}} our way; never touch {{verdict_file}}.\n")
        .unwrap();
    std::fs::write(d.path().join("prompts/common.md"), "HOUSE STYLE\n{{role_brief}}\n{{title}} {{unknown}}\n").unwrap();
    let config = std::fs::read_to_string(d.path().join("orch.toml")).unwrap();
    std::fs::write(
        d.path().join("orch.toml"),
        config.replacen("path = \".\"\n", "path = \".\"\nprompts = \"prompts\"\n", 1),
    )
    .unwrap();
    let (ok, text, err) = show(&d, &["prompt", "show", &key]);
    assert!(ok, "{err}");
    assert!(text.starts_with("HOUSE STYLE\nFix "), "{text}");
    assert!(
        text.contains(&format!("Fix {key} our way; never touch ")) && text.contains("verdicts/job-1.json."),
        "{text}"
    );
    assert!(text.contains("Fix the checkout {{unknown}}"), "unknown placeholders stay as written: {text}");
    // A role without its own file keeps the built-in brief inside the repo's frame.
    let (_, text, _) = show(&d, &["prompt", "show", &key, "--stage", "testing"]);
    assert!(text.starts_with("HOUSE STYLE\nYour job: check the change"), "{text}");

    let (ok, _, err) = show(&d, &["prompt", "show", &key, "--stage", "nowhere"]);
    assert!(!ok && err.contains("no stage nowhere"), "{err}");
    let (ok, _, err) = show(&d, &["prompt", "show", "SHOP-99"]);
    assert!(!ok && err.contains("no item SHOP-99"), "{err}");
}
