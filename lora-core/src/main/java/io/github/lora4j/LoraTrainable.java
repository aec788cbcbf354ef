package io.github.lora4j;

import java.util.List;
import java.util.function.Consumer;
import org.nd4j.linalg.api.buffer.DataType;

/**
 * A layer whose active adapter a trainer can step: {@link LoraLinear} and {@link LoraEmbedding}. These are the calls
 * {@link io.github.lora4j.train.LoraTrainer} makes; the frozen weight is never reachable through them.
 * ({@link LoraConv2d} has no backward pass, so it is not trainable.)
 */
public interface LoraTrainable {

    /** {@return the layer's data type, that of its adapters and their gradients} */
    DataType dataType();

    /** {@return the active adapter's name, or null when none is active} */
    String activeAdapter();

    /** {@return the adapters' names, in the order they were added} */
    List<String> adapterNames();

    /**
     * The adapter named {@code name}.
     *
     * @param name an adapter of this layer
     * @return the adapter (its live A, B and gradients)
     * @throws IllegalArgumentException for an unknown name
     */
    LoraAdapter adapter(String name);

    /** {@return false while adapters are disabled (the layer computes its base output)} */
    boolean adaptersEnabled();

    /** {@return true while an adapter is merged into the frozen weight} */
    boolean isMerged();

    /**
     * Lets {@code update} change the active adapter's trainable arrays in place, under the layer's lock; does
     * nothing when no adapter is active or adapters are disabled.
     *
     * @param update receives the active adapter
     * @throws IllegalStateException while an adapter is merged
     */
    void updateTrainable(Consumer<LoraAdapter> update);

    /** Clears the gradients of every adapter. */
    void zeroGrad();
}
