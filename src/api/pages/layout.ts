import { html, type SafeHtml } from './html.ts';

export interface LayoutOptions {
  title: string;
  body: SafeHtml;
  /** Module scripts of /assets to load (nothing inline: the CSP allows none). */
  scripts?: readonly string[];
  /** The token name of the session, for the header's sign-out; absent when not logged in. */
  user?: string | undefined;
}

/**
 * The pages' Content-Security-Policy: scripts and style sheets from this server only, no inline
 * script, no plugin, no frame, no form to elsewhere. Style *attributes* are allowed: ansi_up writes
 * a log's bold, italic and 24-bit colours as `style="..."` made from the numbers it parsed (the
 * text itself is escaped), and an attribute style can run nothing.
 */
export const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "style-src-elem 'self'",
  "style-src-attr 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

/** A whole page: the header with its navigation, then the body. */
export function layout(o: LayoutOptions): string {
  const doc = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${o.title} · archway</title>
<link rel="stylesheet" href="/assets/pages.css">
${(o.scripts ?? []).map((s) => html`<script type="module" src="/assets/${s}"></script>`)}
</head>
<body>
<header class="top">
<a class="brand" href="/">archway</a>
<nav><a href="/">Builds and jobs</a> <a href="/pools">Pools</a> <a href="/docs">API</a></nav>
<span class="user">${
    o.user
      ? html`${o.user} <form method="post" action="/logout" class="inline"><button type="submit">Sign out</button></form>`
      : html`<a href="/login">Sign in</a>`
  }</span>
</header>
${o.body}
</body>
</html>
`;
  return doc.value;
}

/** The page of a refusal or an error: its status, a title and what to do. */
export function messagePage(title: string, message: string, user?: string): string {
  return layout({
    title,
    user,
    body: html`<main class="message"><h1>${title}</h1><p>${message}</p>
<p><a href="/login">Sign in with a token</a> · <a href="/">Builds and jobs</a></p></main>`,
  });
}
