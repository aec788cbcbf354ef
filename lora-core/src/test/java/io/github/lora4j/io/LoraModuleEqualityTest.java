package io.github.lora4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import io.github.lora4j.io.PeftAdapterLayout.Kind;
import io.github.lora4j.io.PeftAdapterLayout.LoraModule;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;

/**
 * {@link LoraModule} compares by value: its shapes are arrays, which a record's generated equals/hashCode would
 * compare by identity.
 */
class LoraModuleEqualityTest {

    @TempDir
    Path tmp;

    @Provide
    Arbitrary<long[]> shapes() {
        return Arbitraries.longs().between(1, 5000).array(long[].class).ofMinSize(2).ofMaxSize(5);
    }

    @Property(tries = 200)
    void equalComponentsInOtherArraysGiveEqualModulesAndHashes(@ForAll Kind kind, @ForAll @IntRange(min = 1, max = 64) int r,
                                                            @ForAll("shapes") long[] a, @ForAll("shapes") long[] b) {
        LoraModule m = new LoraModule(kind, r, 2.5 * r, a, b);
        LoraModule same = new LoraModule(kind, r, 2.5 * r, a.clone(), b.clone());
        assertEquals(m, same, "equal shapes in other arrays");
        assertEquals(m.hashCode(), same.hashCode(), "equal modules, equal hashes");
        assertEquals(same, m, "symmetric");
    }

    @Property(tries = 200)
    void changingAnyOneComponentBreaksEquality(@ForAll Kind kind, @ForAll @IntRange(min = 1, max = 64) int r,
                                               @ForAll("shapes") long[] a, @ForAll("shapes") long[] b,
                                               @ForAll @IntRange(min = 0, max = 4) int which) {
        LoraModule m = new LoraModule(kind, r, r, a, b);
        long[] a2 = a.clone();
        long[] b2 = b.clone();
        a2[which % a2.length]++;
        b2[which % b2.length]++;
        Kind other = Kind.values()[(kind.ordinal() + 1) % Kind.values().length];
        for (LoraModule changed : List.of(new LoraModule(other, r, r, a, b), new LoraModule(kind, r + 1, r, a, b),
                new LoraModule(kind, r, r + 0.5, a, b), new LoraModule(kind, r, r, a2, b),
                new LoraModule(kind, r, r, a, b2))) {
            assertNotEquals(m, changed, "expected " + m + " to differ from " + changed);
        }
    }

    @Test
    void twoReadsOfOneFileGiveEqualLayoutsModuleByModule() throws IOException {
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.FLOAT, 3), "default");
        PeftAdapterLayout first = PeftAdapterFiles.read(tmp).layout();
        PeftAdapterLayout second = PeftAdapterFiles.read(tmp).layout();
        assertEquals(first.loraModules(), second.loraModules());
        assertEquals(first.loraModules().hashCode(), second.loraModules().hashCode());
    }
}
