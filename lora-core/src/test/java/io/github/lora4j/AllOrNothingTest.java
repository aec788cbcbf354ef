package io.github.lora4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;

/** {@link AllOrNothing}: against a model of which items end changed, and which calls ran in which order. */
class AllOrNothingTest {

    @Property(tries = 300)
    void failedStepUndoesTheDoneItemsInReverseAndRethrows(@ForAll @IntRange(min = 0, max = 8) int size,
            @ForAll @IntRange(min = 0, max = 9) int failAt, @ForAll @Size(max = 3) Set<@IntRange(min = 0, max = 8) Integer> badUndo,
            @ForAll boolean wrap) {
        List<Integer> items = IntStream.range(0, size).boxed().collect(Collectors.toList());
        List<String> calls = new ArrayList<>();
        boolean[] changed = new boolean[size];
        RuntimeException boom = new IllegalStateException("step " + failAt);
        Runnable run = () -> AllOrNothing.run(items, i -> {
            calls.add("step " + i);
            if (i == failAt) {
                throw boom;
            }
            changed[i] = true;
        }, i -> {
            calls.add("undo " + i);
            if (badUndo.contains(i)) {
                throw new IllegalArgumentException("undo " + i);
            }
            changed[i] = false;
        }, String::valueOf, "stepping", "undoing", "changed", (i, done, e) -> wrap
                ? new IllegalArgumentException("item " + i + " after " + done, e) : e);
        if (failAt >= size) {
            run.run();
            List<String> steps = items.stream().map(i -> "step " + i).collect(Collectors.toList());
            assertEquals(steps, calls);
            for (boolean c : changed) {
                assertTrue(c);
            }
            return;
        }
        RuntimeException thrown = assertThrows(RuntimeException.class, run::run);
        List<String> expected = new ArrayList<>();
        for (int i = 0; i <= failAt; i++) {
            expected.add("step " + i);
        }
        for (int i = failAt - 1; i >= 0; i--) {
            expected.add("undo " + i);
        }
        assertEquals(expected, calls, "every done item is undone, in reverse, past failing undos");
        if (wrap) {
            assertEquals("item " + failAt + " after " + failAt, thrown.getMessage());
            assertSame(boom, thrown.getCause());
        } else {
            assertSame(boom, thrown, "the step's own exception is rethrown");
        }
        long failedUndos = badUndo.stream().filter(i -> i < failAt).count();
        assertEquals(failedUndos, boom.getSuppressed().length, "one suppressed exception per failed undo");
        for (int i = 0; i < size; i++) {
            assertEquals(i < failAt && badUndo.contains(i), changed[i], "item " + i + " ends changed only if its "
                    + "undo failed");
        }
    }
}
