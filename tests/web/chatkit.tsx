import { ChatKit, useChatKit } from "@openai/chatkit-react";
import type {
  Entity, FileUploadStrategy, ModelOption, SupportedLocale, ToolOption, Widgets,
} from "@openai/chatkit-react";

const API = "https://<ApiUrl>"; // stack output ApiUrl
const CHATKIT_URL = "https://<id>.lambda-url.<region>.on.aws/api/v1/chatkit"; // stack output ChatKitUrl

// How attachments reach the server. two_phase: attachments.create, then the browser PUTs the
// file straight to S3 (any size up to the limits below). direct: the browser POSTs the file
// (multipart, field `file`) to the ChatKit function, at most 4 MB per file.
const UPLOAD_STRATEGIES = {
  two_phase: { type: "two_phase" },
  direct: { type: "direct", uploadUrl: `${CHATKIT_URL}/attachments` },
} satisfies Record<string, FileUploadStrategy>;
const UPLOAD_STRATEGY: FileUploadStrategy = UPLOAD_STRATEGIES.two_phase; // or .direct

// The server's size limits per file: images 10 MB, other files 20 MB; 4 MB through `direct`.
const MB = 1024 * 1024;
function maxSize(strategy: FileUploadStrategy): number | Record<string, number> {
  return strategy.type === "direct" ? 4 * MB : { "image/*": 10 * MB, "*": 20 * MB };
}

// The model picker: the ids must equal the server's CHATKIT_MODELS (stack parameter
// ChatKitModels, here "gpt-4.1,o4-mini"; a model it does not list is refused with a 400), and
// the `default` one its CHATKIT_MODEL (ChatKitModel, gpt-4.1). Leave `models` out to always
// use CHATKIT_MODEL.
const MODELS: ModelOption[] = [
  { id: "gpt-4.1", label: "GPT-4.1", description: "Fast, everyday", default: true },
  { id: "o4-mini", label: "o4-mini", description: "Thinks before answering" },
];

// The tool menu: each id forces that tool for one message (inference_options.tool_choice.id).
const TOOLS: ToolOption[] = [
  { id: "add_task", label: "Add a task", shortLabel: "Add", icon: "plus",
    placeholderOverride: "What needs doing, and by when?", pinned: true },
  { id: "complete_task", label: "Complete a task", shortLabel: "Complete", icon: "check-circle",
    placeholderOverride: "Which task is done?" },
  { id: "plan_day", label: "Plan my day", shortLabel: "Plan", icon: "calendar",
    placeholderOverride: "Anything to fit in today?" },
];

// The session: a client secret from the sessions endpoint, renewed 30 s before it expires.
let session: { client_secret: string; chatkit_url: string; expires_at: number } | null = null;

async function getClientSecret(current: string | null): Promise<string> {
  const res = await fetch(`${API}/api/chatkit/sessions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${await getUserJwt()}`, "Content-Type": "application/json" },
    body: JSON.stringify(current ? { current_client_secret: current } : {}),
  });
  if (!res.ok) throw new Error((await res.json()).error.message); // {"error":{"code","message"}}
  session = await res.json();
  return session!.client_secret;
}

async function secret(): Promise<string> {
  const soon = Date.now() / 1000 + 30;
  return session && session.expires_at > soon ? session.client_secret : getClientSecret(session?.client_secret ?? null);
}

// The user's IANA time zone, so "tomorrow" is the user's tomorrow (default UTC).
const TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

// Every request of the ChatKit frame goes through this fetch. Only those to the ChatKit
// endpoint (its direct upload URL included) get the session's Bearer token and the time zone;
// anything else, such as the presigned S3 PUT of a two-phase upload, goes out untouched: S3
// refuses a presigned URL that also carries an Authorization header, and the bucket's CORS
// allows neither header.
const chatkitFetch: typeof fetch = async (input, init) => {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  if (!url.startsWith(CHATKIT_URL)) return fetch(input, init);
  const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
  headers.set("Authorization", `Bearer ${await secret()}`);
  headers.set("X-Timezone", TIME_ZONE); // ChatKit already sends Accept-Language
  return fetch(input, { ...init, headers });
};

type Task = { id: string; title: string; description: string | null; completed: boolean; due_date: string | null };

// The card shown when the user hovers a task named in an answer (GET /api/v1/tasks/{id}).
async function taskPreview(entity: Entity): Promise<{ preview: Widgets.BasicRoot | null }> {
  const id = entity.data?.task_id;
  if (!id) return { preview: null };
  const res = await fetch(`${API}/api/v1/tasks/${encodeURIComponent(id)}`, {
    headers: { Authorization: `Bearer ${await getUserJwt()}` },
  });
  if (!res.ok) return { preview: null };
  const task: Task = await res.json();
  const children: Widgets.WidgetComponent[] = [
    { type: "Row", gap: 2, align: "center", children: [
      { type: "Icon", name: task.completed ? "check-circle" : "empty-circle" },
      { type: "Text", value: task.title, weight: "semibold", lineThrough: task.completed, maxLines: 2 },
    ] },
  ];
  if (task.description) children.push({ type: "Text", value: task.description, size: "sm", maxLines: 3 });
  if (task.due_date) children.push({ type: "Caption", value: `Due ${task.due_date}` });
  return { preview: { type: "Basic", direction: "col", gap: 1, padding: 2, children } };
}

export function Assistant({ tasks }: { tasks: TaskListStore }) {
  const chatkit = useChatKit({
    api: {
      url: CHATKIT_URL,              // stack output ChatKitUrl (also `chatkit_url` in the session)
      domainKey: "domain_pk_...",    // from the OpenAI domain allowlist
      uploadStrategy: UPLOAD_STRATEGY,
      fetch: chatkitFetch,
    },
    // The UI's language (ChatKit falls back to English for one it does not translate).
    locale: navigator.language as SupportedLocale,
    // Recent conversations (most recently active first), with rename and delete.
    history: { enabled: true, showDelete: true, showRename: true },
    // Thumbs up/down (items.feedback) and "retry" (threads.retry_after_item) under answers.
    threadItemActions: { feedback: true, retry: true },
    // Photos and documents (10 per message, the types the server accepts), voice input
    // (input.transcribe), the model picker and the tool menu.
    composer: {
      attachments: {
        enabled: true,
        maxCount: 10,
        maxSize: maxSize(UPLOAD_STRATEGY),
        accept: {
          "image/*": [".png", ".jpg", ".jpeg", ".webp", ".gif"],
          "application/pdf": [".pdf"],
          "text/plain": [".txt"],
        },
      },
      dictation: { enabled: true },
      models: MODELS,
      tools: TOOLS,
    },
    entities: {
      // "@" in the composer searches the user's tasks; a picked task is sent as an
      // input_tag whose data.task_id lets the assistant read its current fields.
      onTagSearch: async (query: string) => {
        const q = query.trim();
        if (!q) return [];
        // A filtered page may be short (even empty) while next_cursor is set: follow a few.
        const found: { id: string; title: string; completed: boolean }[] = [];
        let cursor: string | null = null;
        for (let page = 0; page < 5 && found.length < 10; page++) {
          const url = `${API}/api/v1/tasks?q=${encodeURIComponent(q)}&limit=10` +
            (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
          const res = await fetch(url, { headers: { Authorization: `Bearer ${await getUserJwt()}` } });
          if (!res.ok) break;
          const body: { tasks: Task[]; next_cursor: string | null } = await res.json();
          found.push(...body.tasks);
          cursor = body.next_cursor;
          if (!cursor) break;
        }
        return found.slice(0, 10).map((t): Entity => ({
          id: t.id, title: t.title, group: t.completed ? "Done" : "Tasks",
          icon: t.completed ? "check-circle" : "empty-circle",
          data: { task_id: t.id }, interactive: false,
        }));
      },
      // Tasks the assistant names in an answer are entities (data.task_id): a click shows the
      // task in the list, hovering shows a small card.
      onClick: (entity: Entity) => {
        const id = entity.data?.task_id;
        if (id) tasks.focus(id);
      },
      onRequestPreview: taskPreview,
    },
    // The assistant's one client tool: show_task({task_id}) asks the page to show a task; the
    // returned object goes back to the server (threads.add_client_tool_output).
    onClientTool: ({ name, params }) => {
      if (name !== "show_task") return { error: `unknown client tool ${name}` };
      const id = params.task_id;
      if (typeof id !== "string" || !tasks.has(id)) return { shown: false };
      tasks.focus(id);
      return { shown: true };
    },
    // After the assistant (or a widget button) created, changed or deleted tasks:
    // refresh only those in the task list beside the chat.
    onEffect: ({ name, data }) => {
      if (name !== "tasks.changed" || !data) return;
      const { created = [], updated = [], deleted = [] } = data as Record<string, string[]>;
      deleted.forEach((id) => tasks.remove(id));
      [...created, ...updated].forEach((id) => tasks.refresh(id)); // GET /api/v1/tasks/{id}
    },
  });
  return <ChatKit control={chatkit.control} className="h-[600px]" />;
}
