package io.github.lora4j;

import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * What every adapter layer shares: its named adapters (add, activate, delete, set weights, scale), the
 * enable/disable switch, the merge state machine and the parameter counts. {@link LoraLinear},
 * {@link LoraEmbedding} and {@link LoraConv2d} implement it; each keeps its own forward, backward and merge
 * arithmetic. loralib's {@code LoRALayer} and PEFT's {@code BaseTunerLayer} are the models.
 *
 * <h2>Where the shared state lives, and what differs</h2>
 * The state itself is held once: a {@link LoraLinear} owns the adapter set ({@code AdapterSet}), the merge state
 * machine ({@code Merge}, with the exact record), the training cache and the lock. {@link LoraEmbedding} (a
 * {@code LoraLinear} over the table in {@link WeightLayout#IN_OUT}, so {@code W += s·(B A)^T} is the table's
 * update) and {@link LoraConv2d} (a {@code LoraLinear} over the flattened kernel {@code [out, in·kh·kw]}) delegate
 * every management call to that inner layer, so a rule changed there holds for all three. What differs:
 * <ul>
 *   <li>the embedding's adapter init is PEFT's embedding convention ({@code A = 0}, {@code B ~ N(0, 1)}), the
 *       reverse of a linear layer's, so it draws its own {@code A}/{@code B} and sets them on the inner layer;</li>
 *   <li>the embedding keeps its own lock and training flag, because its forward is a row gather (not the inner
 *       layer's forward) and its training cache holds the gathered ids;</li>
 *   <li>a convolution has no training path yet ({@code train}/{@code backward} are absent), and names its weights
 *       in the kernel's 4-d shape for {@link LoraConv2d#weight()} and {@link LoraConv2d#mergedWeight()};</li>
 *   <li>only the linear layer has DoRA, weighted adapter combinations and a mixed-adapter batch.</li>
 * </ul>
 * The train/eval switch is not part of this interface because a convolution has none; the layers with a backward
 * pass (linear and embedding) are also {@link LoraTrainable}, which is what a trainer steps.
 */
public sealed interface LoraModule permits LoraTrainable, LoraConv2d {

    /** The layer kind, for hosts that handle the three alike but must still tell them apart (files, reports). */
    enum Kind {
        /** {@link LoraLinear}: {@code y = x W^T + b + s·x A^T B^T}. */
        LINEAR,
        /** {@link LoraEmbedding}: {@code y = T[ids] + s·(A^T)[ids] B^T}. */
        EMBEDDING,
        /** {@link LoraConv2d}: a conv2d whose flattened kernel gets {@code s·B A}. */
        CONV2D
    }

    /**
     * The layer kind.
     *
     * @return which of the three adapter layers this is
     */
    Kind kind();

    /**
     * The data type of the base weight, and so of every adapter.
     *
     * @return FLOAT or DOUBLE
     */
    DataType dataType();

    /**
     * The elements a training step changes: {@code A} and {@code B} (and a DoRA magnitude) of the active adapter.
     *
     * @return the trainable element count, 0 without an active adapter
     */
    long trainableParameterCount();

    /**
     * All elements: the base weight (and bias) plus every adapter's.
     *
     * @return the total element count
     */
    long totalParameterCount();

    /**
     * Adds an adapter (initialised as the layer kind's class comment says) without making it active.
     *
     * @param name   the new adapter's name: not blank, not already used
     * @param config its configuration
     */
    void addAdapter(String name, LoraConfig config);

    /**
     * Makes {@code name} the adapter used by forward and merge.
     *
     * @param name a known adapter
     */
    void setActiveAdapter(String name);

    /**
     * The active adapter's name.
     *
     * @return the name, or null if none is active
     */
    String activeAdapter();

    /**
     * The adapters' names, in the order they were added.
     *
     * @return an unmodifiable list
     */
    List<String> adapterNames();

    /**
     * The adapter called {@code name}.
     *
     * @param name a known adapter
     * @return its live view (its {@code A}, {@code B}, gradients and config)
     */
    LoraAdapter adapter(String name);

    /**
     * Removes an adapter; refused while it is merged.
     *
     * @param name a known adapter
     */
    void deleteAdapter(String name);

    /**
     * Multiplies the adapter's scaling {@code alpha / r} by {@code scale} (PEFT's {@code set_scale}).
     *
     * @param name  a known adapter
     * @param scale a finite factor
     */
    void setAdapterScale(String name, double scale);

    /**
     * Replaces the adapter's {@code A} and {@code B} by copies of the given values; refused while merged.
     *
     * @param name a known adapter
     * @param a    {@code A}, of the layer's type and the layer kind's file shape: the adapter's {@code [r, in]} for a
     *             linear layer and an embedding, PEFT's {@code [r, in, kh, kw]} for a convolution
     * @param b    {@code B}, likewise ({@code [out, r]}; {@code [out, r, 1, 1]} for a convolution)
     */
    void setAdapterWeights(String name, INDArray a, INDArray b);

    /** Makes forward ignore every adapter (the base output), until {@link #enableAdapters()}. */
    void disableAdapters();

    /** Undoes {@link #disableAdapters()}. */
    void enableAdapters();

    /**
     * Whether forward applies the active adapter.
     *
     * @return false after {@link #disableAdapters()}
     */
    boolean adaptersEnabled();

    /** Folds the active adapter into the base weight, the {@link MergeMode#EXACT exact} way. */
    void merge();

    /**
     * Folds the active adapter into the base weight.
     *
     * @param mode how, and so how exactly {@link #unmerge()} restores the weight
     */
    void merge(MergeMode mode);

    /** Takes the merged adapter out of the base weight again. */
    void unmerge();

    /** Merges the active adapter for good and removes every adapter: what is left is the plain layer. */
    void mergeAndUnload();

    /**
     * Whether an adapter is folded into the base weight.
     *
     * @return true between {@link #merge()} and {@link #unmerge()}
     */
    boolean isMerged();
}
