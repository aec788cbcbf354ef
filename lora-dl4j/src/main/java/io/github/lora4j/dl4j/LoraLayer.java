package io.github.lora4j.dl4j;

/**
 * A LoRA layer of a network ({@link LoraDenseLayerImpl}, {@link LoraOutputLayerImpl}, {@link LoraRnnOutputLayerImpl}),
 * as {@link LoraDl4j} sees it: DL4J's layer API plus the layer's {@link LoraOps}.
 */
interface LoraLayer extends org.deeplearning4j.nn.api.Layer {

    /**
     * The layer's arithmetic, dropout and merge state.
     *
     * @return the layer's own ops, not a copy
     */
    LoraOps ops();

    /**
     * The layer's configuration.
     *
     * @return the LoRA configuration the layer was built from
     */
    default LoraLayerConf loraConf() {
        return (LoraLayerConf) conf().getLayer();
    }

    /**
     * Name, index and type, for messages, in DL4J's own form.
     *
     * @return {@code (layer name: n, layer index: i, layer type: T)}, as DL4J's {@code layerId()}
     */
    default String describe() {
        String name = conf().getLayer().getLayerName();
        return "(layer name: " + (name == null ? "\"\"" : name) + ", layer index: " + getIndex() + ", layer type: "
                + getClass().getSimpleName() + ")";
    }
}
