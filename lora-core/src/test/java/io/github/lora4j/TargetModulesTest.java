package io.github.lora4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.regex.Pattern;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.junit.jupiter.api.Test;

/** {@link TargetModules} against PEFT's {@code check_target_module_exists}, written out as PEFT writes it. */
class TargetModulesTest {

    /** PEFT: {@code key == target_key or key.endswith(f".{target_key}")}. */
    private static boolean peft(String key, String targetKey) {
        return key.equals(targetKey) || key.endsWith("." + targetKey);
    }

    @Provide
    Arbitrary<String> paths() {
        Arbitrary<String> segment = Arbitraries.of("q_proj", "v_proj", "xq_proj", "proj", "layers", "0", "1",
                "self_attn", "model", "q", "a.b");
        return segment.list().ofMinSize(1).ofMaxSize(5).map(l -> String.join(".", l));
    }

    @Property(tries = 400)
    void namesMatchAsPeftDoes(@ForAll("paths") String path, @ForAll("paths") String name) {
        assertEquals(peft(path, name), TargetModules.nameMatches(path, name), path + " vs " + name);
        assertEquals(peft(path, name), TargetModules.anyNameMatches(path, List.of("zzz", name)));
    }

    @Property(tries = 200)
    void anotherSeparatorAddsItsOwnSuffixRule(@ForAll("paths") String path, @ForAll("paths") String name) {
        String scoped = path.replace('.', '/');
        boolean expected = scoped.equals(name) || scoped.endsWith("/" + name) || scoped.endsWith("." + name);
        assertEquals(expected, TargetModules.nameMatches(scoped, name, '.', '/'), scoped + " vs " + name);
    }

    @Test
    void examples() {
        assertTrue(TargetModules.nameMatches("model.layers.0.self_attn.q_proj", "q_proj"));
        assertTrue(TargetModules.nameMatches("model.layers.0.self_attn.q_proj", "self_attn.q_proj"));
        assertTrue(TargetModules.nameMatches("q_proj", "q_proj"));
        assertFalse(TargetModules.nameMatches("model.xq_proj", "q_proj"), "a suffix without the dot");
        assertFalse(TargetModules.nameMatches("a.b.c", "a.b"), "a prefix is no match");
        assertFalse(TargetModules.nameMatches("fc0/weight", "weight"), "'/' only when the host names it");
        assertTrue(TargetModules.nameMatches("fc0/weight", "weight", '.', '/'));
        assertTrue(TargetModules.regexMatches("model.layers.0.q_proj", Pattern.compile(".*\\.(q|v)_proj")));
        assertFalse(TargetModules.regexMatches("model.layers.0.q_proj.x", Pattern.compile(".*\\.(q|v)_proj")),
                "the regex must match the whole path");
        assertFalse(TargetModules.regexMatches("model.layers.0.q_proj", Pattern.compile("q_proj")));
        assertThrows(NullPointerException.class, () -> TargetModules.nameMatches(null, "q"));
        assertThrows(NullPointerException.class, () -> TargetModules.anyNameMatches("q", null));
    }
}
