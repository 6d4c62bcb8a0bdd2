#!/bin/sh
echo "hello from kiln"
