package io.github.lora4j.io;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * PEFT's matching of {@code rank_pattern} / {@code alpha_pattern} keys against module paths, with a bound on the
 * work one key may spend on one path, so that a hostile regex in a file cannot hang the reader.
 */
final class PatternKeys {

    private PatternKeys() {
    }

    static List<Map.Entry<String, Pattern>> compile(Set<String> keys) {
        List<Map.Entry<String, Pattern>> out = new ArrayList<>();
        for (String k : keys) {
            // PEFT: re.match(rf"(.*\.)?({key})$", module) after an exact comparison.
            out.add(Map.entry(k, Pattern.compile("(?:.*\\.)?(?:" + k + ")")));
        }
        return out;
    }

    /** Characters a regex reads as operators (outside classes), in Java's syntax and Python's alike; not the dot. */
    private static final String OPERATORS = "\\^$*+?()[]{}|";

    /**
     * The key a save writes for {@code module}: the path itself, PEFT's habit, with the regex operators in it
     * escaped by a backslash, so that a path such as {@code layers[0](a)} (a DL4J or SameDiff name) is a valid regex
     * matching itself, in Python as here. Dots stay as they are (PEFT writes dotted paths as keys); a save checks
     * that every module's key gives it back its own rank and alpha.
     */
    static String literal(String module) {
        StringBuilder out = new StringBuilder(module.length());
        for (int i = 0; i < module.length(); i++) {
            char c = module.charAt(i);
            if (OPERATORS.indexOf(c) >= 0) {
                out.append('\\');
            }
            out.append(c);
        }
        return out.toString();
    }

    /** Character reads one pattern key may spend on one module path: far above any sane regex, far below a hang. */
    private static final long MATCH_BUDGET = 1_000_000;

    /** The first key that names {@code module} (equal, or as a regex matching its tail), or null if none does. */
    static String find(List<Map.Entry<String, Pattern>> keys, String module) {
        for (Map.Entry<String, Pattern> k : keys) {
            if (k.getKey().equals(module)) {
                return k.getKey();
            }
            try {
                if (k.getValue().matcher(new Budgeted(module, MATCH_BUDGET)).matches()) {
                    return k.getKey();
                }
            } catch (Budgeted.Exhausted e) {
                throw new IllegalArgumentException("pattern key '" + k.getKey() + "' needs more than " + MATCH_BUDGET
                        + " steps to match module '" + module + "' (catastrophic backtracking); expected a plain name "
                        + "or a simple regex");
            }
        }
        return null;
    }

    /** A string whose characters may be read a bounded number of times, so a hostile regex cannot hang a reader. */
    private static final class Budgeted implements CharSequence {
        static final class Exhausted extends RuntimeException {
            private static final long serialVersionUID = 1L;

            Exhausted() {
                super(null, null, false, false);
            }
        }

        private final String s;
        private final long[] left;
        private final int from;
        private final int to;

        Budgeted(String s, long budget) {
            this(s, new long[] {budget}, 0, s.length());
        }

        private Budgeted(String s, long[] left, int from, int to) {
            this.s = s;
            this.left = left;
            this.from = from;
            this.to = to;
        }

        @Override
        public char charAt(int index) {
            if (--left[0] < 0) {
                throw new Exhausted();
            }
            return s.charAt(from + index);
        }

        @Override
        public int length() {
            return to - from;
        }

        @Override
        public CharSequence subSequence(int start, int end) {
            return new Budgeted(s, left, from + start, from + end);
        }

        @Override
        public String toString() {
            return s.substring(from, to);
        }
    }
}
