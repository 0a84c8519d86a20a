// Logs in through the gateway in a real browser: Debian's Chromium, driven by playwright-core.
//   node browser-login.mjs <protected URL> <user>
// Prints one JSON line: {"url": <final URL>, "status": <HTTP status>, "body": <page text>}.
import { chromium } from 'playwright-core';

const [start, user] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(20000);
  await page.goto(start);
  // oidc-provider's development login form, then its consent page.
  await page.fill('input[name=login]', user);
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  await page.waitForSelector('button[type=submit]');
  const origin = new URL(start).origin;
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().startsWith(origin) && !r.url().includes('/oauth2/callback') && r.request().isNavigationRequest()),
    page.click('button[type=submit]'),
  ]);
  await page.waitForLoadState('load');
  console.log(JSON.stringify({ url: page.url(), status: response.status(), body: await page.innerText('body') }));
} finally {
  await browser.close();
}
