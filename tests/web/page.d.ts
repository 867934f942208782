// What tests/web/chatkit.tsx needs from the page around it (your code, not ChatKit's): the
// signed-in user's JWT for the REST API, and the task list shown beside the chat.

/** The signed-in user's JWT (Cognito or your IdP), for `Authorization: Bearer` on the REST API. */
declare function getUserJwt(): Promise<string>;

/** The task list beside the chat. */
interface TaskListStore {
  /** Reloads one task (GET /api/v1/tasks/{id}) and shows its new state. */
  refresh(id: string): void;
  /** Drops a deleted task from the list. */
  remove(id: string): void;
  /** Scrolls to a task and highlights it. */
  focus(id: string): void;
  /** Whether the list holds this task. */
  has(id: string): boolean;
}
