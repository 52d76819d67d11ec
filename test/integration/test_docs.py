"""The documentation names every configuration key, and no other: the man
page (man/idlefetch.conf.5), README's key table and README's list of
environment variables are read and compared with the table of keys in
src/cli/config_keys.c, and that table with what the binary accepts."""
import os
import re
import shlex
import subprocess
import tempfile
import unittest

import fixture as fx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def both(keys, name, section):
    """Files name under section in keys: "both" for a key of [global]
    that is also one of each account (on_delivery)."""
    if keys.get(name, section) != section:
        section = "both"
    keys[name] = section


def table():
    """{name: (section, env, flags)} from the rows of config_keys[]; the
    section is "both" for a name with a row in each."""
    text = read("src/cli/config_keys.c")
    start = text.index("const struct config_key config_keys[] = {")
    body = text[start:text.index("\n};", start)]
    rows = re.findall(r"\{ (GLOBAL|ACCOUNT)\([a-z_.]+\),\s*"
                      r"\.name = \"([a-z_]+)\",(.*?)\.doc = \"", body, re.S)
    keys = {}
    for section, name, rest in rows:
        env = re.search(r"\.env = \"([A-Z_]+)\"", rest)
        env = env.group(1) if env else None
        if name in keys and (keys[name][0] == section.lower() or
                             keys[name][1] != env):
            raise AssertionError("key %s has two rows" % name)
        keys[name] = ("both" if name in keys else section.lower(), env,
                      rest)
    if len(rows) != body.count(".name = "):
        raise AssertionError("a row of config_keys[] was not understood")
    return keys


def bold_words(tag):
    """The bold words of a man page tag line (.B, .BR, .RB, .BI, .IB)."""
    macro, _, args = tag.partition(" ")
    words = shlex.split(args)
    if macro == ".B":
        bold = words
    elif macro in (".BR", ".BI"):
        bold = words[0::2]
    elif macro in (".RB", ".IB"):
        bold = words[1::2]
    else:
        bold = []
    return [w for w in bold if re.fullmatch(r"[a-z_]+", w)]


def man_keys():
    """{name: section} of the keys the man page describes (.TP tags)."""
    lines = read("man/idlefetch.conf.5").split("\n")
    keys, section = {}, None
    for i, line in enumerate(lines):
        if line.startswith(".SH "):
            title = line[4:].strip().strip('"')
            section = ("global" if title == "[global]" else
                       "account" if title.startswith("[account") else None)
        elif line == ".TP" and section and i + 1 < len(lines):
            for name in bold_words(lines[i + 1]):
                both(keys, name, section)
    return keys


def readme_keys():
    """{name: section} of the first column of README's key table."""
    lines = read("README.md").split("\n")
    start = lines.index("| key | meaning |")
    keys = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = line.split(" | ")
        global_ = cells[1].startswith("(`[global]`)")
        for name in re.findall(r"`([a-z_]+)(?: = [^`]*)?`", cells[0]):
            both(keys, name, "global" if global_ else "account")
    return keys


def readme_env():
    """The IDLEFETCH_* variables of README's "From the environment"."""
    text = read("README.md")
    start = text.index("### From the environment")
    part = text[start:text.index("\n#", start + 1)]
    return set(re.findall(r"`(IDLEFETCH_[A-Z_]+)`", part)) - {
        "IDLEFETCH_ACCOUNT"}


def run(args, env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("IDLEFETCH_")}
    e.update(env)
    p = subprocess.run([fx.IDLEFETCH, *args], capture_output=True, env=e,
                       timeout=30)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class DocsTest(unittest.TestCase):
    def assertSameKeys(self, got, where):
        want = {n: s for n, (s, _, _) in table().items()}
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        moved = sorted(n for n in set(got) & set(want) if got[n] != want[n])
        self.assertEqual((missing, extra, moved), ([], [], []),
                         "%s: keys missing %s; not keys %s; in the wrong "
                         "section %s" % (where, missing, extra, moved))

    def test_each_key_has_its_environment_variable(self):
        # The man page's rule: IDLEFETCH_KEY for every key.
        for name, (_, env, _) in table().items():
            self.assertEqual(env, "IDLEFETCH_" + name.upper(), name)

    def test_man_page_names_every_key_and_no_other(self):
        self.assertSameKeys(man_keys(), "man/idlefetch.conf.5")

    def test_readme_key_table_names_every_key_and_no_other(self):
        self.assertSameKeys(readme_keys(), "README.md's key table")

    def test_readme_lists_every_environment_variable_and_no_other(self):
        self.assertEqual(readme_env(),
                         {env for _, env, _ in table().values()})

    def test_binary_takes_each_key_in_its_section_only(self):
        d = tempfile.mkdtemp(prefix="idlefetch-docs-")
        conf = os.path.join(d, "idlefetch.conf")
        account = ("[account a]\nhost = h.example\nusername = u\n"
                   "password = p\nmaildir = /m\n")
        for name, (section, _, _) in table().items():
            for where in ("global", "account"):
                line = "%s = x\n" % name
                text = ("[global]\n" + line + account if where == "global"
                        else account + line)
                with open(conf, "w") as f:
                    f.write(text)
                os.chmod(conf, 0o600)
                _, _, err = run(["--check-config", "--config", conf], {})
                unknown = "key '%s': unknown key in [%s]" % (
                    name, where if where == "global" else "account a")
                if section in (where, "both"):
                    self.assertNotIn(unknown, err)
                else:
                    self.assertIn(unknown, err)

    def test_binary_reads_each_environment_variable_of_the_table(self):
        base = {"IDLEFETCH_HOST": "h.example", "IDLEFETCH_USERNAME": "u",
                "IDLEFETCH_PASSWORD": "p", "IDLEFETCH_MAILDIR": "/m"}
        for name, (_, env, rest) in table().items():
            if "CONFIG_KEY_EMPTY_OK" in rest:
                continue
            # An empty value is refused, with the variable and the key.
            rc, _, err = run(["--check-config"], dict(base, **{env: ""}))
            self.assertEqual(rc, 2, name)
            self.assertTrue(err.startswith("idlefetch: %s: key '%s': "
                                           % (env, name)), err)


if __name__ == "__main__":
    unittest.main()
