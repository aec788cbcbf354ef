package io.github.lora4j;

import java.util.List;
import java.util.function.Consumer;

/**
 * An adapter layer with a backward pass, whose adapters a trainer can step: {@link LoraLinear} and
 * {@link LoraEmbedding}. These are the calls {@link io.github.lora4j.train.LoraTrainer} makes beyond
 * {@link LoraModule}'s; the frozen weight is never reachable through them. ({@link LoraConv2d} has no backward pass,
 * so it is not trainable.)
 */
public sealed interface LoraTrainable extends LoraModule permits LoraLinear, LoraEmbedding {

    /**
     * The adapters whose accumulated gradients an optimizer step applies: every adapter a backward gave gradients
     * since they were last cleared (after a {@linkplain LoraLinear#forward(org.nd4j.linalg.api.ndarray.INDArray,
     * String[]) mixed batch}, every adapter that had rows in it), or, while no backward has run since, the effective
     * adapter (the active one, with adapters enabled).
     *
     * @return their names, in the order the adapters were added to the layer (a new list)
     */
    List<String> adaptersWithGradients();

    /**
     * Lets {@code update} change the active adapter's trainable arrays in place, under the layer's lock; does
     * nothing when no adapter is active or adapters are disabled.
     *
     * @param update receives the active adapter
     * @throws IllegalStateException while an adapter is merged
     */
    void updateTrainable(Consumer<LoraAdapter> update);

    /**
     * Lets {@code update} change adapter {@code name}'s trainable arrays in place, active or not, under the layer's
     * lock: the way an optimizer steps each adapter a mixed batch trained.
     *
     * @param name   an adapter of this layer
     * @param update receives that adapter
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    while an adapter is merged
     */
    void updateTrainable(String name, Consumer<LoraAdapter> update);

    /** Clears the gradients of every adapter. */
    void zeroGrad();

    /**
     * Clears the gradients of adapter {@code name} only (an optimizer step does this for each adapter it stepped).
     *
     * @param name an adapter of this layer
     * @throws IllegalArgumentException for an unknown name
     */
    void zeroGrad(String name);
}
