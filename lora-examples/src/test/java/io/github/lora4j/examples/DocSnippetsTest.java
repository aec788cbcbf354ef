package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * The repository's one snippet check: the README and every guide under {@code docs/} show only code that compiles and
 * runs.
 *
 * <ul>
 *   <li>Every {@code ```java} block of {@code README.md} and {@code docs/*.md} must be, whitespace-normalised, a marked
 *       region of a Java source under some module's {@code src/} (a test, an example, or main code the tests run). A
 *       region starts with a line {@code // docs/<page>.md: <name>} (or {@code // README.md: <name>}; the name is
 *       optional) and ends with {@code // end}.</li>
 *   <li>Every region must appear in the page it names, so a region changed in code fails until the page is changed
 *       too.</li>
 *   <li>Every {@code ```xml} block naming {@code io.github.lora4j} artifacts must name modules of this build, with the
 *       build's version.</li>
 * </ul>
 * This module depends on every published one, so {@code mvn test} of the whole build runs it after theirs compiled.
 */
class DocSnippetsTest {

    private static final Pattern START = Pattern.compile("//\\s*((?:README|docs/[\\w.-]+)\\.md)(?::\\s*(.*))?");
    private static final Pattern XML_DEP = Pattern.compile(
            "<dependency>\\s*<groupId>io\\.github\\.lora4j</groupId>\\s*<artifactId>([^<]+)</artifactId>"
                    + "\\s*<version>([^<]+)</version>");

    /** The repository root: the first directory up from the module's that holds the parent POM and README. */
    static Path root() {
        Path p = Path.of("").toAbsolutePath();
        while (p != null && !(Files.isRegularFile(p.resolve("README.md")) && Files.isDirectory(p.resolve("docs"))
                && Files.isRegularFile(p.resolve("pom.xml")) && Files.isDirectory(p.resolve("lora-core")))) {
            p = p.getParent();
        }
        assertTrue(p != null, "no repository root (README.md, docs/, pom.xml) above " + Path.of("").toAbsolutePath());
        return p;
    }

    /** A code block of a page: the page, its first line's number (1-based) and its text. */
    record Block(String page, int line, String text) {}

    /** A marked region of a source file. */
    record Region(String page, String name, Path file, int line, String text) {}

    /** Collapses every run of whitespace to one space, so indentation and line breaks do not count. */
    static String normalise(String s) {
        return s.strip().replaceAll("\\s+", " ");
    }

    /** The fenced blocks of one language in a page. */
    static List<Block> blocks(String page, List<String> lines, String language) {
        List<Block> out = new ArrayList<>();
        StringBuilder body = null;
        int start = 0;
        for (int i = 0; i < lines.size(); i++) {
            String t = lines.get(i).trim();
            if (body == null && t.startsWith("```")) {
                if (t.equals("```" + language)) {
                    body = new StringBuilder();
                    start = i + 1;
                } else if (!t.equals("```")) {
                    // another language's block: skip to its end
                    while (++i < lines.size() && !lines.get(i).trim().equals("```")) {
                        // skip
                    }
                } else {
                    while (++i < lines.size() && !lines.get(i).trim().equals("```")) {
                        // skip a block without a language
                    }
                }
            } else if (body != null && t.equals("```")) {
                out.add(new Block(page, start, body.toString()));
                body = null;
            } else if (body != null) {
                body.append(lines.get(i)).append('\n');
            }
        }
        if (body != null) {
            fail(page + ":" + start + ": a ```" + language + " block is never closed");
        }
        return out;
    }

    /** The regions of one source file; an unclosed or nested region fails, naming file and line. */
    static List<Region> regions(Path file, List<String> lines) {
        List<Region> out = new ArrayList<>();
        Region open = null;
        StringBuilder body = new StringBuilder();
        for (int i = 0; i < lines.size(); i++) {
            String t = lines.get(i).trim();
            Matcher m = START.matcher(t);
            if (m.matches()) {
                if (open != null) {
                    fail(file + ":" + (i + 1) + ": a region starts inside the region of line " + open.line());
                }
                open = new Region(m.group(1), m.group(2) == null ? "" : m.group(2).trim(), file, i + 1, null);
                body.setLength(0);
            } else if (open != null && t.equals("// end")) {
                out.add(new Region(open.page(), open.name(), file, open.line(), body.toString()));
                open = null;
            } else if (open != null) {
                body.append(lines.get(i)).append('\n');
            }
        }
        if (open != null) {
            fail(file + ":" + open.line() + ": region for " + open.page() + " has no // end");
        }
        return out;
    }

    /** README.md and docs/*.md, relative to the root. */
    static List<String> pages(Path root) throws IOException {
        List<String> pages = new ArrayList<>();
        pages.add("README.md");
        try (Stream<Path> s = Files.list(root.resolve("docs"))) {
            s.filter(p -> p.getFileName().toString().endsWith(".md")).sorted()
                    .forEach(p -> pages.add("docs/" + p.getFileName()));
        }
        return pages;
    }

    /** Every region in every module's src/ tree (build output is not searched). */
    static List<Region> allRegions(Path root) throws IOException {
        List<Region> out = new ArrayList<>();
        try (Stream<Path> modules = Files.list(root)) {
            for (Path module : modules.filter(d -> Files.isDirectory(d.resolve("src"))).sorted().toList()) {
                try (Stream<Path> files = Files.walk(module.resolve("src"))) {
                    for (Path f : files.filter(f -> f.toString().endsWith(".java")).sorted().toList()) {
                        out.addAll(regions(root.relativize(f), read(f)));
                    }
                }
            }
        }
        return out;
    }

    private static List<String> read(Path f) {
        try {
            return Files.readAllLines(f);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The problems: blocks without a region, regions missing from their page. Empty when all is well. */
    static List<String> problems(Path root) throws IOException {
        List<String> problems = new ArrayList<>();
        List<Region> regions = allRegions(root);
        List<String> pages = pages(root);
        for (String page : pages) {
            List<Block> blocks = blocks(page, read(root.resolve(page)), "java");
            Set<String> shown = new TreeSet<>();
            for (Block b : blocks) {
                String text = normalise(b.text());
                shown.add(text);
                boolean found = regions.stream().anyMatch(r -> r.page().equals(page)
                        && normalise(r.text()).equals(text));
                if (!found) {
                    String near = regions.stream().filter(r -> r.page().equals(page)).map(r -> r.file() + ":"
                            + r.line()).distinct().reduce((a, c) -> a + ", " + c).orElse("none");
                    problems.add(page + ":" + b.line() + ": this ```java block is no region `// " + page
                            + ": <name>` ... `// end` of a compiled source (regions for this page: " + near
                            + "); copy the block from code that runs, or mark that code as a region");
                }
            }
            for (Region r : regions) {
                if (r.page().equals(page) && !shown.contains(normalise(r.text()))) {
                    problems.add(r.file() + ":" + r.line() + ": region '" + r.name() + "' for " + page
                            + " is not shown in the page as it is in the code; update the page's block");
                }
            }
        }
        for (Region r : regions) {
            if (!pages.contains(r.page())) {
                problems.add(r.file() + ":" + r.line() + ": region for " + r.page() + ", which does not exist");
            }
        }
        return problems;
    }

    @Test
    void everyJavaBlockIsARegionOfRunCodeAndEveryRegionIsShown() throws IOException {
        Path root = root();
        List<String> problems = problems(root);
        assertTrue(problems.isEmpty(), problems.size() + " snippet problem(s):\n" + String.join("\n", problems));
        long blocks = 0;
        for (String page : pages(root)) {
            blocks += blocks(page, read(root.resolve(page)), "java").size();
        }
        assertTrue(blocks >= 10, "the pages hold " + blocks + " Java blocks: is the root " + root + " right?");
    }

    /** The build's version and its modules' artifact ids, read from the POMs. */
    static Map<String, String> artifacts(Path root) throws IOException {
        String parent = Files.readString(root.resolve("pom.xml"));
        String version = parent.replaceAll("(?s)<parent>.*?</parent>", "")
                .replaceFirst("(?s).*?<version>([^<]+)</version>.*", "$1");
        Map<String, String> out = new LinkedHashMap<>();
        Matcher m = Pattern.compile("<module>([^<]+)</module>").matcher(parent);
        while (m.find()) {
            String pom = Files.readString(root.resolve(m.group(1)).resolve("pom.xml"))
                    .replaceAll("(?s)<parent>.*?</parent>", "");
            String id = pom.replaceFirst("(?s).*?<artifactId>([^<]+)</artifactId>.*", "$1");
            out.put(id, version);
        }
        return out;
    }

    @Test
    void dependencySnippetsNameThisBuildsArtifactsAndVersion() throws IOException {
        Path root = root();
        Map<String, String> artifacts = artifacts(root);
        assertTrue(artifacts.containsKey("lora-core") && artifacts.containsKey("lora-dl4j"),
                "modules read from the POMs: " + artifacts);
        List<String> problems = new ArrayList<>();
        int seen = 0;
        for (String page : pages(root)) {
            for (Block b : blocks(page, read(root.resolve(page)), "xml")) {
                Matcher m = XML_DEP.matcher(b.text());
                while (m.find()) {
                    seen++;
                    String id = m.group(1);
                    if (!artifacts.containsKey(id)) {
                        problems.add(page + ":" + b.line() + ": artifact " + id + " is no module of this build "
                                + artifacts.keySet());
                    } else if (!artifacts.get(id).equals(m.group(2))) {
                        problems.add(page + ":" + b.line() + ": " + id + " version " + m.group(2)
                                + ", but the build is " + artifacts.get(id));
                    }
                }
                if (b.text().contains("io.github.lora4j") && !XML_DEP.matcher(b.text()).find()) {
                    problems.add(page + ":" + b.line() + ": names io.github.lora4j but no <dependency> with "
                            + "groupId, artifactId, version in that order");
                }
            }
        }
        assertTrue(problems.isEmpty(), String.join("\n", problems));
        assertTrue(seen >= 3, "only " + seen + " lora4j dependency snippets found");
    }

    @Test
    void ciRunsTheReadmesTwoSetupCommands() throws IOException {
        Path root = root();
        List<String> ci = Files.readAllLines(root.resolve(".ci/run")).stream().map(String::trim).toList();
        Pattern row = Pattern.compile("\\| (Run all tests|Run the main example)[^|]*\\| `([^`]+)` \\|");
        int found = 0;
        for (String line : read(root.resolve("README.md"))) {
            Matcher m = row.matcher(line);
            if (m.find()) {
                found++;
                assertTrue(ci.contains(m.group(2)), "README's '" + m.group(1) + "' command `" + m.group(2)
                        + "` is not a line of .ci/run: keep them in step");
            }
        }
        assertEquals(2, found, "README's set-up table must have 'Run all tests' and 'Run the main example' rows");
    }

    @Test
    void regionsAndBlocksAreParsedAndCompareWhitespaceNormalised() {
        Path src = Path.of("X.java");
        List<Region> rs = regions(src, List.of("  // docs/a.md: one", "    int a = 1;", "  // end"));
        assertEquals(1, rs.size());
        assertEquals("docs/a.md", rs.get(0).page());
        assertEquals("one", rs.get(0).name());
        assertEquals(normalise("int a = 1;"), normalise(rs.get(0).text()));
        List<Block> bs = blocks("docs/a.md", List.of("text", "```java", "int a =", "   1;", "```"), "java");
        assertEquals(List.of(new Block("docs/a.md", 2, "int a =\n   1;\n")), bs);
        assertEquals(normalise(rs.get(0).text()), normalise(bs.get(0).text()), "whitespace does not count");
        assertEquals(false, normalise("int a = 2;").equals(normalise(rs.get(0).text())), "a changed token does");
    }
}
