import { html } from './html.ts';
import { layout } from './layout.ts';

/** The token login form; `next` is where it returns (a path on this server). */
export function loginPage(next: string, error?: string): string {
  return layout({
    title: 'Sign in',
    body: html`<main class="message"><h1>Sign in</h1>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
<form method="post" action="/login" class="login">
<label>API token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
<input type="hidden" name="next" value="${next}">
<button type="submit">Sign in</button>
</form>
<p>Any token of this installation (ARCHWAY_TOKEN or ARCHWAY_TOKENS) opens the pages.</p></main>`,
  });
}
