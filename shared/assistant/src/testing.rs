//! The assistant of the in-process chat tests (the `testing` feature).

use taskpilot_chatkit::testing::ScriptedModel;

/// The task assistant of the in-process chat tests: in-memory tasks, the
/// scripted `model`, brief instructions, at most `max_tool_steps` rounds.
pub fn scripted_agent(
    model: ScriptedModel,
    max_tool_steps: usize,
) -> crate::TaskAgent<taskpilot_domain::memory::InMemoryTasks, ScriptedModel> {
    let cursors = taskpilot_domain::CursorCodec::new(&[7u8; 32], chrono::Duration::hours(1))
        .unwrap_or_else(|| panic!("a 32-byte key is long enough"));
    let tasks = taskpilot_domain::TaskService::new(
        taskpilot_domain::memory::InMemoryTasks::default(),
        cursors,
    );
    let settings = crate::AgentSettings {
        model: "gpt-test".into(),
        models: vec![],
        temperature: 0.2,
        instructions: "Be brief.".into(),
        max_tool_steps,
        max_tool_calls: 20,
    };
    crate::TaskAgent::new(tasks, model, settings)
}
