// The web dashboard (issue 17) in a real browser: Debian's chromium, headless, driven by
// selenium through chromium-driver. It asserts what an operator sees: the configured mappings,
// a backend that goes away turning "down", the drain button taking a backend out of balancing
// (proved by where new sessions go), and charts with points; it saves a screenshot.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "harness.h"

namespace pgproxy::it {
namespace {

const char* kDashboardDrive = R"PY(
import os, signal, sys, time
import psycopg
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

admin_port, token, data_conninfo, backend_pid, drained_port, screenshot = sys.argv[1:7]
opts = Options()
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1400,1300", "--user-data-dir=" + os.environ.get("TMPDIR", "/tmp") +
          "/pgproxy-chromium-%d" % os.getpid()):
    opts.add_argument(a)
opts.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
wait = WebDriverWait(driver, 20, poll_frequency=0.2)
try:
    driver.get("http://127.0.0.1:%s/" % admin_port)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "save-token").click()
    # The mappings table lists the configured names.
    wait.until(lambda d: [r.get_attribute("data-name") for r in
                          d.find_elements(By.CSS_SELECTOR, "#mappings tbody tr")] == ["db.example.com"])
    # The tables are redrawn every refresh: read and click in one script call, never through an
    # element found earlier (it may be gone by then).
    def text(selector):
        return driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            selector) or ""
    def click(selector):
        wait.until(lambda d: d.execute_script(
            "const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e;", selector))
    row = '#backends tr[data-backend="127.0.0.1:%s"]' % drained_port
    def clusters(n):
        seen = {}
        for _ in range(n):
            with psycopg.connect(data_conninfo, connect_timeout=10) as c:
                name = c.execute("show cluster_name").fetchone()[0]
            seen[name] = seen.get(name, 0) + 1
        return seen
    assert set(clusters(20)) == {"host1", "host2"}, "both backends take sessions at first"
    # The drain button takes a backend out of balancing: new sessions all go to the other one.
    click(row + ' button[data-action="drain"]')
    wait.until(lambda d: "drained" in text(row))
    seen = clusters(20)
    assert seen == {"host1": 20}, seen
    click(row + ' button[data-action="undrain"]')
    wait.until(lambda d: "drained" not in text(row))
    assert set(clusters(20)) == {"host1", "host2"}, "undrained, it takes sessions again"
    # A backend stopped by the test turns to "down" within the check interval (and a refresh).
    os.kill(int(backend_pid), signal.SIGTERM)
    wait.until(lambda d: text(row + " .state").startswith("down"))
    # The charts have points: one per refresh after the first.
    chart = '.chart[data-mapping="db.example.com"]'
    wait.until(lambda d: int(d.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.dataset.points : 0;",
        chart) or 0) >= 2)
    points = driver.execute_script(
        "return document.querySelector(arguments[0]).getAttribute('points');",
        chart + " polyline.rate")
    assert len(points.split()) >= 2, points
    # Sessions and pools are listed live; the generation is shown.
    assert text("#generations tbody tr"), "a generation is shown"
    assert text("#version").startswith("pgproxy"), text("#version")
    if screenshot:
        driver.save_screenshot(screenshot)
    print("ok")
finally:
    driver.quit()
)PY";

TEST(AdminDashboard, AnOperatorSeesAndDrivesItInARealBrowser) {
  // A second pgproxy in front of host2 is the backend the test stops.
  int backend_port = freePort();
  Proxy backend(
      "default: x.example.com\nmappings:\n  - {external: x.example.com, internal: 127.0.0.1, "
      "port: {P2}}\n",
      1, "", backend_port);
  int admin_port = freePort();
  std::string dir = tempDir("pgproxy-dashboard");
  writeFile(dir + "/token", "dash-token\n");
  Proxy proxy("admin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port) +
              "\"\n  token_file: " + dir +
              "/token\n"
              "default: db.example.com\nmappings:\n  - external: db.example.com\n"
              "    health_check: {interval: 200ms, timeout: 200ms, fall: 1, rise: 1}\n"
              "    backends:\n      - {host: 127.0.0.1, port: {P1}}\n"
              "      - {host: 127.0.0.1, port: " +
              std::to_string(backend_port) + "}\n");
  // PGPROXY_DASHBOARD_SCREENSHOT=path keeps the page as the browser drew it (docs/).
  const char* shot = std::getenv("PGPROXY_DASHBOARD_SCREENSHOT");
  runClient(kPython, "dashboard.py", kDashboardDrive,
            {std::to_string(admin_port), "dash-token", proxy.plain(), std::to_string(backend.pid()),
             std::to_string(backend_port), shot ? shot : ""},
            proxy);
}

}  // namespace
}  // namespace pgproxy::it
