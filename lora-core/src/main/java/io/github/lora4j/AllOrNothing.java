package io.github.lora4j;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * The one rollback rule of the hosts' model-wide calls (merge every module, add an adapter to every module, ...):
 * apply a step to each item in order; on the first failure undo the items already done, in reverse order, and
 * rethrow. A failure of an undo does not stop the rollback: it is attached to the rethrown exception as suppressed,
 * naming the item that stays changed. Used by {@code LoraModel}, {@code LoraSameDiffModel} and lora-dl4j.
 *
 * <pre>{@code
 * AllOrNothing.run(layers, LoraLinear::merge, LoraLinear::unmerge, LoraLinear::toString, "merging", "unmerging",
 *         "merged");
 * }</pre>
 */
public final class AllOrNothing {

    private AllOrNothing() {
    }

    /**
     * What the caller throws when a step fails, after the rollback: the step's own exception by default
     * ({@link #run(List, Consumer, Consumer, Function, String, String, String)}), or a wrapper that says more.
     *
     * @param <T> the item type
     */
    @FunctionalInterface
    public interface OnFailure<T> {
        /**
         * The exception to throw.
         *
         * @param failed the item whose step failed
         * @param undone how many items were done before it (and were undone)
         * @param cause  the step's exception, with any rollback failures attached as suppressed
         * @return the exception to throw: {@code cause} itself or one that wraps it
         */
        RuntimeException exception(T failed, int undone, RuntimeException cause);
    }

    /**
     * Applies {@code step} to each of {@code items} in order; on the first failure applies {@code undo} to those done,
     * in reverse, and rethrows that failure itself (rollback failures attached as suppressed).
     *
     * @param items    the items, in order
     * @param step     the change
     * @param undo     what restores an item after {@code step}
     * @param name     an item's name for messages
     * @param stepping the step's gerund ("merging"), for the suppressed exceptions' messages
     * @param undoing  the undo's gerund ("unmerging")
     * @param stays    the state an item that could not be undone stays in ("merged")
     * @param <T>      the item type
     * @throws RuntimeException the step's exception, after the rollback
     */
    public static <T> void run(List<T> items, Consumer<? super T> step, Consumer<? super T> undo,
                               Function<? super T, String> name, String stepping, String undoing, String stays) {
        run(items, step, undo, name, stepping, undoing, stays, (failed, undone, cause) -> cause);
    }

    /**
     * {@link #run(List, Consumer, Consumer, Function, String, String, String)}, throwing what {@code onFailure}
     * makes of the step's exception.
     *
     * @param items     the items, in order
     * @param step      the change
     * @param undo      what restores an item after {@code step}
     * @param name      an item's name for messages
     * @param stepping  the step's gerund, for the suppressed exceptions' messages
     * @param undoing   the undo's gerund
     * @param stays     the state an item that could not be undone stays in
     * @param onFailure the exception to throw after the rollback
     * @param <T>       the item type
     * @throws RuntimeException what {@code onFailure} returns, after the rollback
     */
    public static <T> void run(List<T> items, Consumer<? super T> step, Consumer<? super T> undo,
                               Function<? super T, String> name, String stepping, String undoing, String stays,
                               OnFailure<? super T> onFailure) {
        Objects.requireNonNull(items, "items must not be null");
        Objects.requireNonNull(onFailure, "onFailure must not be null");
        List<T> done = new ArrayList<>();
        for (T a : items) {
            try {
                step.accept(a);
            } catch (RuntimeException e) {
                for (int i = done.size() - 1; i >= 0; i--) {
                    try {
                        undo.accept(done.get(i));
                    } catch (RuntimeException rollback) {
                        e.addSuppressed(new IllegalStateException("rolling back after " + stepping + " '"
                                + name.apply(a) + "' failed: " + undoing + " '" + name.apply(done.get(i))
                                + "' failed too, so it stays " + stays, rollback));
                    }
                }
                throw onFailure.exception(a, done.size(), e);
            }
            done.add(a);
        }
    }
}
