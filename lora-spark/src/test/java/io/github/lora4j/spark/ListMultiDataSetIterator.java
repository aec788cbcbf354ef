package io.github.lora4j.spark;

import java.util.List;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.dataset.api.MultiDataSetPreProcessor;
import org.nd4j.linalg.dataset.api.iterator.MultiDataSetIterator;

/** The given MultiDataSets, one per {@code next()}, as they are (DL4J's own list iterators merge or reshape). */
final class ListMultiDataSetIterator implements MultiDataSetIterator {

    private final List<MultiDataSet> list;
    private int next;

    ListMultiDataSetIterator(List<MultiDataSet> list) {
        this.list = list;
    }

    @Override
    public MultiDataSet next(int num) {
        throw new UnsupportedOperationException();
    }

    @Override
    public void setPreProcessor(MultiDataSetPreProcessor preProcessor) {
        throw new UnsupportedOperationException();
    }

    @Override
    public MultiDataSetPreProcessor getPreProcessor() {
        return null;
    }

    @Override
    public boolean resetSupported() {
        return true;
    }

    @Override
    public boolean asyncSupported() {
        return false;
    }

    @Override
    public void reset() {
        next = 0;
    }

    @Override
    public boolean hasNext() {
        return next < list.size();
    }

    @Override
    public MultiDataSet next() {
        return list.get(next++);
    }
}
