// Keeps a list page (/, /pools, /builds/:id) current: every data-refresh ms, the server renders
// the page's <main> again (already escaped) and it replaces this one. Paused while the tab is
// hidden; stopped once the page says it is final (data-final).
const INTERVAL = Number(document.getElementById('live')?.dataset.refresh ?? 3000);

async function refresh() {
  const main = document.getElementById('live');
  if (!main || main.dataset.final === 'true') return;
  if (!document.hidden) {
    try {
      const res = await fetch(location.href, {
        headers: { 'x-archway-fragment': '1' },
        credentials: 'same-origin',
      });
      if (res.ok) {
        main.outerHTML = await res.text();
        document.documentElement.dataset.refreshed = String(Date.now());
      }
    } catch {
      // The server is restarting, or the network is away: the next round tries again.
    }
  }
  setTimeout(refresh, INTERVAL);
}

setTimeout(refresh, INTERVAL);
