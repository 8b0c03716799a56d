import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';

/** Debian's chromium (ops/setup-host.sh installs it); never a downloaded browser. */
export const CHROMIUM = process.env.ARCHWAY_TEST_CHROMIUM ?? '/usr/bin/chromium';

/** Where the page tests leave their screenshots. */
export const SCREENSHOT_DIR = join(process.cwd(), 'test-results', 'pages');

/** Headless Chromium, driven through playwright-core. */
export async function launchBrowser(): Promise<Browser> {
  // Tests run as root, where Chromium's sandbox refuses to start.
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
}

/** Saves the page's screenshot as test-results/pages/<name>.png and returns its path. */
export async function screenshot(page: Page, name: string, fullPage = false): Promise<string> {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage });
  return path;
}
